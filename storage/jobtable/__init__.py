"""The job table (SQLAlchemy; SQLite by default, PostgreSQL in production): the source of
truth for jobs, rows, registered models, the webhook outbox and API keys. Tables in
:mod:`storage.jobtable.tables`, migrations (Alembic) in ``storage/jobtable/migrations``, and
one repository per concern, gathered by :class:`JobTable` (``table.jobs``, ``table.rows``,
``table.recovery``, ``table.models``, ``table.webhooks``, ``table.stitch``,
``table.api_keys``). Every state change is one conditional UPDATE; every call retries lost
connections.
"""

from storage.jobtable.engine import cached_engine, make_engine, ping, upgrade
from storage.jobtable.row_records import Claim, Progress
from storage.jobtable.stats import TableStats, table_stats
from storage.jobtable.table import JobTable, job_table
from storage.jobtable.tables import ApiKey, Job, ModelRecord, Row, utcnow
from storage.jobtable.webhook_outbox import WebhookAttempt, WebhookStatus

__all__ = [
    "ApiKey",
    "Claim",
    "Job",
    "JobTable",
    "ModelRecord",
    "Progress",
    "Row",
    "TableStats",
    "WebhookAttempt",
    "WebhookStatus",
    "cached_engine",
    "job_table",
    "make_engine",
    "ping",
    "table_stats",
    "upgrade",
    "utcnow",
]
