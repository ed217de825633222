"""sync drain lease: one drain per mapping at a time

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-23 14:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

import opsflow.store

revision = '0004'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('drain_owner', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('drain_until', opsflow.store.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.drop_column('drain_until')
        batch_op.drop_column('drain_owner')
