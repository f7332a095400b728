"""Worker heartbeats (``workers``) and the planner's/reducer's stage claim on a job
(``jobs.stage_worker``, ``stage_started_at``, ``stage_attempts``), so a dead worker's rows and
stages are noticed within seconds (worker/liveness.py, docs/reliability.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("stage_worker", sa.String(200), nullable=True))
        batch.add_column(sa.Column("stage_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stage_attempts", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stage_attempts")
        batch.drop_column("stage_started_at")
        batch.drop_column("stage_worker")
    op.drop_table("workers")
