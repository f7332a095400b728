"""Jobs carry the lease of their streaming stitcher (``pelletseg.stitch``), so the reducer
knows whether to wait for its staged outputs or to stitch the rows itself.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("stitch_worker", sa.String(200), nullable=True))
        batch.add_column(
            sa.Column("stitch_lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stitch_lease_expires_at")
        batch.drop_column("stitch_worker")
