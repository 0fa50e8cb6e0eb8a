"""rating campaigns: campaigns, their items (two answers, the sides), assignments and ratings

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:30:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0008'
down_revision: Union[str, None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('campaign',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('models', sa.JSON(), nullable=False),
    sa.Column('mode', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('criteria', sa.JSON(), nullable=False),
    sa.Column('ratings_per_item', sa.Integer(), nullable=False),
    sa.Column('pairs_per_prompt', sa.Integer(), nullable=False),
    sa.Column('eval_id', sa.Integer(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('salt', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['eval_id'], ['eval_run.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_eval_id'), ['eval_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_campaign_status'), ['status'], unique=False)

    op.create_table('campaign_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('input', sa.Text(), nullable=False),
    sa.Column('model_a', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('model_b', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('answer_a', sa.Text(), nullable=False),
    sa.Column('answer_b', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'position')
    )
    with op.batch_alter_table('campaign_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_item_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('campaign_assignment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('rater', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('assigned_at', sa.Float(), nullable=False),
    sa.Column('rated', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.ForeignKeyConstraint(['item_id'], ['campaign_item.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('item_id', 'rater')
    )
    with op.batch_alter_table('campaign_assignment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_assignment_item_id'), ['item_id'], unique=False)
        batch_op.create_index('ix_campaign_assignment_rater', ['campaign_id', 'rater'], unique=False)

    op.create_table('rating',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('rater', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('winner', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.ForeignKeyConstraint(['item_id'], ['campaign_item.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('item_id', 'rater')
    )
    with op.batch_alter_table('rating', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_item_id'), ['item_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rating', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_item_id'))
        batch_op.drop_index(batch_op.f('ix_rating_campaign_id'))

    op.drop_table('rating')
    with op.batch_alter_table('campaign_assignment', schema=None) as batch_op:
        batch_op.drop_index('ix_campaign_assignment_rater')
        batch_op.drop_index(batch_op.f('ix_campaign_assignment_item_id'))

    op.drop_table('campaign_assignment')
    with op.batch_alter_table('campaign_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_item_campaign_id'))

    op.drop_table('campaign_item')
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_status'))
        batch_op.drop_index(batch_op.f('ix_campaign_eval_id'))

    op.drop_table('campaign')
