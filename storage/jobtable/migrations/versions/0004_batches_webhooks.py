"""Batches and the webhook outbox on the jobs table.

``batch_id`` groups the jobs of one ``POST /v1/batches``. The ``webhook_*`` columns are the
outbox of each job's end-of-job notification (see ``storage/jobtable/webhook_outbox.py``): armed in the same
conditional UPDATE that ends the job, then delivered, retried and recorded there.
``webhook_url`` is copied out of the stored spec so that this UPDATE can arm it in SQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("webhook_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("webhook_event", sa.String(16), nullable=True))
        batch.add_column(sa.Column("webhook_event_at", TIMESTAMP, nullable=True))
        batch.add_column(
            sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("webhook_next_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("webhook_last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_delivered_at", TIMESTAMP, nullable=True))
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"])
    op.create_index("ix_jobs_webhook_status", "jobs", ["webhook_status"])
    # Jobs submitted before this revision keep their webhook in the spec: copy it out.
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("spec", sa.JSON),
                    sa.column("webhook_url", sa.Text))
    conn = op.get_bind()
    for job_id, spec in conn.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        url = (spec or {}).get("webhook_url")
        if url:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(webhook_url=url))


def downgrade() -> None:
    op.drop_index("ix_jobs_webhook_status", table_name="jobs")
    op.drop_index("ix_jobs_batch_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in ("webhook_delivered_at", "webhook_last_error", "webhook_next_at",
                     "webhook_attempts", "webhook_event_at", "webhook_event", "webhook_status",
                     "webhook_url", "batch_id"):
            batch.drop_column(name)
