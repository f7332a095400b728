"""The job table: one :class:`JobTable` per database, holding a repository per concern.

Every state change is one conditional UPDATE (``UPDATE ... WHERE status IN (:allowed_from)``)
checked by ``rowcount``, so of two workers (or two deliveries of one message) racing for the
same job or row exactly one wins and the other sees ``False``. Nothing is cached; the database
is the source of truth.
"""

from __future__ import annotations

from sqlalchemy import Engine

from core.settings import Settings
from storage.jobtable.api_keys import ApiKeys
from storage.jobtable.engine import cached_engine
from storage.jobtable.heartbeats import Heartbeats
from storage.jobtable.job_records import JobRecords
from storage.jobtable.model_records import ModelRecords
from storage.jobtable.recovery import Recovery
from storage.jobtable.retries import DEFAULT_RETRY_SECONDS
from storage.jobtable.row_records import RowRecords
from storage.jobtable.stitch_leases import StitchLeases
from storage.jobtable.webhook_outbox import WebhookOutbox

__all__ = ["JobTable", "job_table"]


class JobTable:
    """The job table of one database (SQLite or PostgreSQL), by concern.

    Attributes:
        engine: The SQLAlchemy engine.
        jobs: Job records: create, get, list, move through the state machine
            (:class:`~storage.jobtable.job_records.JobRecords`).
        rows: Row records: claim, renew, complete, fail; progress and class counts
            (:class:`~storage.jobtable.row_records.RowRecords`).
        recovery: Expired leases, lost messages, spot release, stuck jobs, resume
            (:class:`~storage.jobtable.recovery.Recovery`).
        models: Registered model packages
            (:class:`~storage.jobtable.model_records.ModelRecords`).
        webhooks: The end-of-job webhook outbox
            (:class:`~storage.jobtable.webhook_outbox.WebhookOutbox`).
        stitch: The streaming stitcher's lease per job
            (:class:`~storage.jobtable.stitch_leases.StitchLeases`).
        api_keys: The HTTP API's keys (:class:`~storage.jobtable.api_keys.ApiKeys`).
        heartbeats: Worker processes' heartbeats; a dead worker's rows and stages given back
            (:class:`~storage.jobtable.heartbeats.Heartbeats`).

    Args:
        engine: Engine of a migrated database (:func:`storage.jobtable.engine.upgrade`).
        retry_seconds: How long each call retries a lost or refused connection (s).
    """

    def __init__(self, engine: Engine, retry_seconds: float = DEFAULT_RETRY_SECONDS):
        self.engine = engine
        self.jobs = JobRecords(engine, retry_seconds)
        self.rows = RowRecords(engine, retry_seconds)
        self.recovery = Recovery(engine, retry_seconds)
        self.models = ModelRecords(engine, retry_seconds)
        self.webhooks = WebhookOutbox(engine, retry_seconds)
        self.stitch = StitchLeases(engine, retry_seconds)
        self.api_keys = ApiKeys(engine)
        self.heartbeats = Heartbeats(engine, retry_seconds)


def job_table(settings: Settings) -> JobTable:
    """The :class:`JobTable` of ``settings`` (one cached engine per database URL and process),
    retrying lost connections for ``settings.db_retry_seconds``.

    Raises:
        StorageError: the database URL cannot be used.
    """
    return JobTable(cached_engine(settings.resolved_database_url), settings.db_retry_seconds)
