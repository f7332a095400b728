"""The job table's operations. Every state change is one conditional UPDATE.

``UPDATE ... WHERE status IN (:allowed_from)`` and a check of ``rowcount`` make each transition
atomic: of two workers (or two deliveries of one message) racing for the same row, exactly one
wins and the other sees ``False``. Nothing here is cached; the database is the source of truth.
Job operations live here; row records in :mod:`storage.rows` (recovery of lost rows in
:mod:`storage.recovery`), model records in :mod:`storage.model_records`, the webhook outbox in
:mod:`storage.webhooks`, the streaming stitcher's lease in :mod:`storage.stitch_leases`.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from storage.db import as_utc, cached_engine, session_scope
from storage.errors import NotFoundError, StorageError
from storage.model_records import ModelTable
from storage.models import Job, utcnow
from storage.recovery import RecoveryTable
from storage.retries import with_retries
from storage.rows import Claim, Progress, RowTable
from storage.settings import Settings
from storage.spec import JobSpec
from storage.states import JobStatus, job_sources
from storage.stitch_leases import StitchLeaseTable
from storage.webhooks import JOB_TIMESTAMPS, WebhookOutbox, arm_webhook

__all__ = ["Claim", "JobStore", "Progress", "job_store"]


@with_retries  # lost/refused connections retried with backoff (storage/retries.py)
class JobStore(RowTable, RecoveryTable, ModelTable, WebhookOutbox, StitchLeaseTable):
    """Repository over the job table (jobs, rows, models, webhook outbox) bound to one engine.

    Raises (every method):
        StorageError: the database failed or is unreachable (chained from SQLAlchemy's error).
        NotFoundError: a job or model that must exist does not.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # ---------------------------------------------------------------- jobs
    def create_job(
        self,
        spec: JobSpec,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        batch_id: str | None = None,
    ) -> Job:
        """Insert a ``queued`` job for ``spec`` (in batch ``batch_id`` if given); an existing
        ``idempotency_key`` returns that job."""
        now = utcnow()
        values = dict(
            id=job_id or str(uuid.uuid4()),
            status=JobStatus.QUEUED.value,
            spec=spec.model_dump(mode="json"),
            source_url=spec.source_url,
            idempotency_key=idempotency_key,
            model_name=spec.model,
            model_version=spec.model_version,
            webhook_url=spec.webhook_url,
            batch_id=batch_id,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._sessions.begin() as session:
                session.execute(insert(Job).values(**values))
        except IntegrityError as e:
            if idempotency_key is not None:
                existing = self.find_by_idempotency_key(idempotency_key)
                if existing is not None:
                    return existing
            raise StorageError(f"cannot create job {values['id']}: {e.orig}") from e
        except SQLAlchemyError as e:
            raise StorageError(f"cannot create job: {e}") from e
        return self.get_job(values["id"])

    def find_by_idempotency_key(self, key: str) -> Job | None:
        """The job created with ``key``, or None."""
        with self._tx() as conn:
            row = conn.execute(select(Job).where(Job.idempotency_key == key)).first()
        return _job_from_row(row) if row else None

    def get_job(self, job_id: str) -> Job:
        """Load one job (a detached snapshot).

        Raises:
            NotFoundError: no job has this id.
        """
        with self._tx() as conn:
            row = conn.execute(select(Job).where(Job.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"job {job_id} does not exist")
        return _job_from_row(row)

    def list_jobs(
        self,
        status: JobStatus | None = None,
        limit: int = 100,
        *,
        offset: int = 0,
        labels: dict[str, str] | None = None,
        batch_id: str | None = None,
    ) -> list[Job]:
        """Newest jobs first, optionally only those with ``status``, in batch ``batch_id``, and
        with every label in ``labels`` (a label matches when ``str(spec.labels[key]) == value``).

        ``offset`` skips that many matching jobs. Labels are filtered in Python over the
        status-filtered jobs (JSON operators differ between SQLite and PostgreSQL), scanned in
        batches of 500.
        """
        q = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
        if status is not None:
            q = q.where(Job.status == status.value)
        if batch_id is not None:
            q = q.where(Job.batch_id == batch_id)
        if not labels:
            with self._tx() as conn:
                return [_job_from_row(r) for r in conn.execute(q.limit(limit).offset(offset))]
        found: list[Job] = []
        skip, start, batch = offset, 0, 500
        while len(found) < limit:
            with self._tx() as conn:
                page = [_job_from_row(r) for r in conn.execute(q.limit(batch).offset(start))]
            for job in page:
                job_labels = (job.spec or {}).get("labels") or {}
                if all(k in job_labels and str(job_labels[k]) == v for k, v in labels.items()):
                    if skip:
                        skip -= 1
                    elif len(found) < limit:
                        found.append(job)
            if len(page) < batch:
                break
            start += batch
        return found

    def transition_job(
        self,
        job_id: str,
        target: JobStatus,
        *,
        expected: JobStatus | None = None,
        **values,
    ) -> bool:
        """Move a job to ``target`` if the state machine allows it from its current status.

        ``expected`` narrows the allowed sources to that one status: a stage that moves its own
        job on (e.g. the planner, ``planning -> running``) must not also revive a job that was
        cancelled meanwhile, although ``cancelled -> running`` is a valid resume. Extra
        ``values`` (e.g. ``error=``, ``width=``) are written in the same UPDATE; so is the
        webhook outbox when ``target`` ends the job (:func:`storage.webhooks.arm_webhook`).

        Returns:
            True if this call made the transition; False if the job was in another status
            (e.g. a duplicate delivery already moved it).
        """
        now = utcnow()
        values.setdefault("updated_at", now)
        if target == JobStatus.RUNNING:
            values.setdefault("error", None)
            values.setdefault("finished_at", None)
        if target in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
            values.setdefault("finished_at", now)
        if target == JobStatus.PLANNING:
            values.setdefault("started_at", now)
        values = {**arm_webhook(target, now), **values}
        sources = job_sources(target)
        if expected is not None:
            sources = sources & {expected}
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.status.in_([s.value for s in sources]))
            .values(status=target.value, **values)
        )
        with self._tx() as conn:
            return conn.execute(stmt).rowcount == 1

    def set_model(self, job_id: str, name: str, version: str, sha256: str) -> None:
        """Record the exact model package (name, version, weights sha256) a job runs with."""
        stmt = (
            update(Job)
            .where(Job.id == job_id)
            .values(model_name=name, model_version=version, model_sha256=sha256)
        )
        with self._tx() as conn:
            conn.execute(stmt)

    def set_outputs(self, job_id: str, outputs: dict) -> None:
        """Store the output keys (label map, overlay, fractions...) on the job."""
        with self._tx() as conn:
            conn.execute(update(Job).where(Job.id == job_id).values(outputs=outputs))

    # ---------------------------------------------------------------- plumbing
    def _tx(self):
        """One transaction (see :func:`storage.db.session_scope`)."""
        return session_scope(self._sessions, f"job table error ({self.engine.url!r})")


def _job_from_row(row) -> Job:
    return as_utc(row[0], *JOB_TIMESTAMPS)


def job_store(settings: Settings) -> JobStore:
    """The :class:`JobStore` of ``settings`` (one cached engine per database URL and process).

    Raises:
        StorageError: the database URL cannot be used.
    """
    store = JobStore(cached_engine(settings.resolved_database_url))
    store.retry_seconds = settings.db_retry_seconds
    return store
