"""Job records: create, read, list and move jobs through their state machine.

Every state change is one conditional UPDATE (``UPDATE jobs ... WHERE status IN
(:allowed_from)``) checked by ``rowcount``: of two workers (or two deliveries of one message)
racing to move the same job, exactly one wins and the other sees ``False``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core.spec import JobSpec
from core.states import JOB_TERMINAL, JobStatus, job_sources
from storage.errors import NotFoundError, StorageError
from storage.jobtable.base import Repository
from storage.jobtable.engine import as_utc
from storage.jobtable.retries import with_retries
from storage.jobtable.tables import JOB_TIMESTAMPS, Job, utcnow
from storage.jobtable.webhook_outbox import arm_webhook

__all__ = ["JobRecords"]


@with_retries  # lost/refused connections retried with backoff (storage/jobtable/retries.py)
class JobRecords(Repository):
    """The ``jobs`` table: one record per pellet image.

    Raises (every method):
        StorageError: the database failed or is unreachable.
        NotFoundError: a job that must exist does not.
    """

    def create(
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
        return self.get(values["id"])

    def find_by_idempotency_key(self, key: str) -> Job | None:
        """The job created with ``key``, or None."""
        with self._tx() as conn:
            row = conn.execute(select(Job).where(Job.idempotency_key == key)).first()
        return job_from_row(row) if row else None

    def get(self, job_id: str) -> Job:
        """Load one job (a detached snapshot).

        Raises:
            NotFoundError: no job has this id.
        """
        with self._tx() as conn:
            row = conn.execute(select(Job).where(Job.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"job {job_id} does not exist")
        return job_from_row(row)

    def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """``{id: status}`` of those of ``job_ids`` the table has (unknown ids left out), in
        one query per 500 ids."""
        found: dict[str, JobStatus] = {}
        for start in range(0, len(job_ids), 500):
            q = select(Job.id, Job.status).where(Job.id.in_(job_ids[start:start + 500]))
            with self._tx() as conn:
                found.update((str(i), JobStatus(s)) for i, s in conn.execute(q))
        return found

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        """How many jobs of batch ``batch_id`` are in each status (``{}``: no such batch)."""
        q = (select(Job.status, func.count()).where(Job.batch_id == batch_id)
             .group_by(Job.status))
        with self._tx() as conn:
            return {str(status): int(n) for status, n in conn.execute(q).all()}

    def list(
        self,
        status: JobStatus | None = None,
        limit: int = 100,
        *,
        offset: int = 0,
        labels: dict[str, str] | None = None,
        batch_id: str | None = None,
        with_deleted: bool = False,
    ) -> list[Job]:
        """Newest jobs first, optionally only those with ``status``, in batch ``batch_id``, and
        with every label in ``labels`` (a label matches when ``str(spec.labels[key]) == value``).
        ``deleted`` jobs are left out unless ``status`` is ``deleted`` or ``with_deleted``.

        ``offset`` skips that many matching jobs. Labels are filtered in Python over the
        status-filtered jobs (JSON operators differ between SQLite and PostgreSQL), scanned in
        batches of 500.
        """
        q = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
        if status is not None:
            q = q.where(Job.status == status.value)
        elif not with_deleted:
            q = q.where(Job.status != JobStatus.DELETED.value)
        if batch_id is not None:
            q = q.where(Job.batch_id == batch_id)
        if not labels:
            with self._tx() as conn:
                return [job_from_row(r) for r in conn.execute(q.limit(limit).offset(offset))]
        found: list[Job] = []
        skip, start, batch = offset, 0, 500
        while len(found) < limit:
            with self._tx() as conn:
                page = [job_from_row(r) for r in conn.execute(q.limit(batch).offset(start))]
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

    def ended_before(self, cutoff: datetime, limit: int = 20) -> list[str]:
        """Ids of jobs that ended (succeeded, failed or cancelled) before ``cutoff``, the
        longest ended first: what a retention period (``PELLETSEG_RETENTION_DAYS``) deletes."""
        ended = [s.value for s in JOB_TERMINAL - {JobStatus.DELETED}]
        q = (select(Job.id).where(Job.status.in_(ended), Job.finished_at.is_not(None),
                                  Job.finished_at < cutoff)
             .order_by(Job.finished_at, Job.id).limit(limit))
        with self._tx() as conn:
            return [str(job_id) for (job_id,) in conn.execute(q)]

    def reading(self, source_url: str) -> list[tuple[str, JobStatus]]:
        """``(id, status)`` of the jobs, other than ``deleted`` ones, whose source is exactly
        ``source_url`` (an upload's file: :meth:`storage.blobs.UploadStore.source_url`), oldest
        first: what deleting that upload would take from them (a resume or rerun of a job
        re-reads its source)."""
        q = (select(Job.id, Job.status)
             .where(Job.source_url == source_url, Job.status != JobStatus.DELETED.value)
             .order_by(Job.created_at, Job.id))
        with self._tx() as conn:
            return [(str(job_id), JobStatus(status)) for job_id, status in conn.execute(q)]

    def transition(
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
        webhook outbox when ``target`` ends the job (:func:`storage.jobtable.webhook_outbox.arm_webhook`).

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
        if target in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.REDUCING):
            # a new stage (or a resume): the stage claim and its attempts start afresh
            values.setdefault("stage_worker", None)
            values.setdefault("stage_attempts", 0)
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

    def claim_stage(self, job_id: str, statuses: list[JobStatus], worker: str) -> int:
        """Claim the planner's or reducer's stage of a job in one of ``statuses`` for
        ``worker`` unless a live worker holds it: one more attempt (conditional UPDATE).

        Returns:
            The attempt number this claim runs as (1-based), or 0 when the job is in another
            status or a live worker runs the stage (a duplicate message: skip it).
        """
        from storage.jobtable.row_records import live_workers

        now = utcnow()
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.status.in_([s.value for s in statuses]),
                   or_(Job.stage_worker.is_(None), Job.stage_worker == worker,
                       Job.stage_worker.not_in(live_workers(now))))
            .values(stage_worker=worker, stage_started_at=now,
                    stage_attempts=Job.stage_attempts + 1)
        )
        with self._tx() as conn:
            if conn.execute(stmt).rowcount != 1:
                return 0
            return int(conn.execute(select(Job.stage_attempts).where(Job.id == job_id))
                       .scalar_one())

    def release_stage(self, job_id: str, worker: str) -> None:
        """Let go of a stage claim ``worker`` holds (the stage ended or will be retried)."""
        with self._tx() as conn:
            conn.execute(update(Job).where(Job.id == job_id, Job.stage_worker == worker)
                         .values(stage_worker=None))

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


def job_from_row(row) -> Job:
    """A job read by ``select(Job)``, its naive SQLite datetimes marked UTC."""
    return as_utc(row[0], *JOB_TIMESTAMPS)
