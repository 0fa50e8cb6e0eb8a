"""dataset versions: parent, row kind, split size

Every edit of a dataset makes a new version that points at the one it was edited from;
the row kind (alpaca or chat) and the size of a stored validation split are kept on the
version so lists and jobs need not read the snapshot.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 08:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('dataset_version', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default='alpaca')
        )
        batch_op.add_column(sa.Column('validation_rows', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_foreign_key(
            'fk_dataset_version_parent_id', 'dataset_version', ['parent_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('dataset_version', schema=None) as batch_op:
        batch_op.drop_constraint('fk_dataset_version_parent_id', type_='foreignkey')
        batch_op.drop_column('validation_rows')
        batch_op.drop_column('kind')
        batch_op.drop_column('parent_id')
