"""transfer partial uploads: the resumable large-file uploads a provider has under way

Revision ID: 0009_transfer_partials
Revises: 0008
Create Date: 2026-11-29 20:20:00
"""

import sqlalchemy as sa
from alembic import op

import opsflow.store

revision = '0009_transfer_partials'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('transfer_partial_uploads',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('site', sa.String(length=200), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('temp_path', sa.Text(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('verified_length', sa.BigInteger(), nullable=False),
    sa.Column('prefix_sha256', sa.String(length=64), nullable=False),
    sa.Column('updated_at', opsflow.store.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transfer_partial_uploads')),
    sa.UniqueConstraint('site', 'path', name='uq_transfer_partial_uploads_site_path')
    )


def downgrade() -> None:
    op.drop_table('transfer_partial_uploads')
