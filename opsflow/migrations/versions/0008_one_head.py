"""one head again: the features' branches (0003, 0004, 0006, 0007) merged

The features grew their tables side by side from the first revision; this merge gives the
history a single head, so the next migration has one parent and `alembic upgrade head`
works as well as `heads`.

Revision ID: 0008
Revises: 0003, 0004, 0006, 0007
Create Date: 2026-11-23 17:00:00.000000
"""

revision = '0008'
down_revision = ('0003', '0004', '0006', '0007')
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
