"""evaluations: runs of automatic metrics over a few models, and their rows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
import sqlmodel


revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# jobstatus exists since 0001 (the job table): reuse it, never create or drop it here
_STATUS = postgresql.ENUM('queued', 'running', 'succeeded', 'failed', 'cancelled', name='jobstatus', create_type=False)


def upgrade() -> None:
    op.create_table('eval_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', _STATUS, nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('stage', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('models', sa.JSON(), nullable=False),
    sa.Column('specs', sa.JSON(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('dataset_version_id', sa.Integer(), nullable=True),
    sa.Column('split', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('max_rows', sa.Integer(), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('sampling', sa.JSON(), nullable=False),
    sa.Column('results', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.Float(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.ForeignKeyConstraint(['dataset_version_id'], ['dataset_version.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('eval_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_run_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_eval_run_dataset_id'), ['dataset_id'], unique=False)
        batch_op.create_index('ix_eval_run_status_lease', ['status', 'lease_expires_at'], unique=False)

    op.create_table('eval_row',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('eval_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('input', sa.Text(), nullable=False),
    sa.Column('context', sa.JSON(), nullable=False),
    sa.Column('reference', sa.Text(), nullable=True),
    sa.Column('category', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('outputs', sa.JSON(), nullable=False),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['eval_id'], ['eval_run.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('eval_id', 'index')
    )
    with op.batch_alter_table('eval_row', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_row_eval_id'), ['eval_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('eval_row', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_eval_row_eval_id'))
    op.drop_table('eval_row')
    with op.batch_alter_table('eval_run', schema=None) as batch_op:
        batch_op.drop_index('ix_eval_run_status_lease')
        batch_op.drop_index(batch_op.f('ix_eval_run_dataset_id'))
        batch_op.drop_index(batch_op.f('ix_eval_run_status'))
    op.drop_table('eval_run')
    # the jobstatus enum type belongs to the job table (0001): it stays
