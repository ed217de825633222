"""sync path bytes: the exact bytes of a queued name that is not UTF-8

Text columns refuse the surrogate escapes Python gives undecodable bytes, so a Latin-1 name
keeps a display form in `path`/`dest_path` and its bytes here; NULL for UTF-8 names.

Revision ID: 0010_sync_path_bytes
Revises: 0009_transfer_partials
Create Date: 2026-12-01 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010_sync_path_bytes'
down_revision = '0009_transfer_partials'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sync_actions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('path_bytes', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('dest_path_bytes', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sync_actions', schema=None) as batch_op:
        batch_op.drop_column('dest_path_bytes')
        batch_op.drop_column('path_bytes')
