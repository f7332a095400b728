"""Rows record how their labels were computed (``rows.inference``: runtime, device, precision,
leading float32 convolutions, test-time augmentation), so a job's results say which
arithmetic made them: a package served in bfloat16 on CPUs with bfloat16 units and in float32
elsewhere gives labels that differ on a few pixels per 10,000 (docs/performance.md, "Mixed
precision").

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rows") as batch:
        batch.add_column(sa.Column("inference", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rows") as batch:
        batch.drop_column("inference")
