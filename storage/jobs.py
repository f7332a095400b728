"""The job table's operations. Every state change is one conditional UPDATE.

``UPDATE ... WHERE status IN (:allowed_from)`` and a check of ``rowcount`` make each transition
atomic: of two workers (or two deliveries of one message) racing for the same row, exactly one
wins and the other sees ``False``. Nothing here is cached; the database is the source of truth.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contextlib import contextmanager

from sqlalchemy import Engine, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from storage.errors import NotFoundError, StorageError
from storage.models import Job, ModelRecord, Row, utcnow
from storage.spec import JobSpec
from storage.states import JobStatus, RowStatus, job_sources, row_sources


@dataclass(frozen=True)
class Claim:
    """Outcome of :meth:`JobStore.claim_row`.

    Attributes:
        claimed: True when this caller now holds the row's lease and must process it.
        status: The row's status after the attempt (``done`` means a checkpoint exists).
        attempt: The attempt number this claim runs as (1-based; 0 if not claimed).
    """

    claimed: bool
    status: RowStatus
    attempt: int


@dataclass(frozen=True)
class Progress:
    """Row counts of one job by status, and image pixels already segmented."""

    total: int
    pending: int
    running: int
    done: int
    failed: int
    pixels_done: int


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every datetime pelletseg stores is UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


class JobStore:
    """Repository over the job table (jobs, rows, models) bound to one engine.

    Raises (every method):
        StorageError: the database failed or is unreachable (chained from SQLAlchemy's error).
        NotFoundError: a job or model that must exist does not.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # ---------------------------------------------------------------- jobs
    def create_job(
        self, spec: JobSpec, *, job_id: str | None = None, idempotency_key: str | None = None
    ) -> Job:
        """Insert a ``queued`` job for ``spec``; an existing ``idempotency_key`` returns that job."""
        now = utcnow()
        values = dict(
            id=job_id or str(uuid.uuid4()),
            status=JobStatus.QUEUED.value,
            spec=spec.model_dump(mode="json"),
            source_url=spec.source_url,
            idempotency_key=idempotency_key,
            model_name=spec.model,
            model_version=spec.model_version,
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
    ) -> list[Job]:
        """Newest jobs first, optionally only those with ``status`` and every label in
        ``labels`` (a label matches when ``str(spec.labels[key]) == value``).

        ``offset`` skips that many matching jobs. Labels are filtered in Python over the
        status-filtered jobs (JSON operators differ between SQLite and PostgreSQL), scanned in
        batches of 500.
        """
        q = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
        if status is not None:
            q = q.where(Job.status == status.value)
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
        ``values`` (e.g. ``error=``, ``width=``) are written in the same UPDATE.

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

    # ---------------------------------------------------------------- rows
    def insert_rows(self, job_id: str, bounds: Sequence[tuple[int, int]]) -> int:
        """Create ``pending`` row records for image rows ``[y0, y1)``; idempotent.

        A second call for a job that already has rows inserts nothing.

        Returns:
            The number of rows inserted.
        """
        with self._tx() as conn:
            have = conn.execute(
                select(func.count()).select_from(Row).where(Row.job_id == job_id)
            ).scalar_one()
            if have:
                return 0
            conn.execute(
                insert(Row),
                [
                    dict(job_id=job_id, index=i, status=RowStatus.PENDING.value, y0=y0, y1=y1,
                         attempts=0)
                    for i, (y0, y1) in enumerate(bounds)
                ],
            )
        return len(bounds)

    def get_row(self, job_id: str, index: int) -> Row:
        """Load one row record.

        Raises:
            NotFoundError: the row does not exist.
        """
        with self._tx() as conn:
            row = conn.execute(select(Row).where(Row.job_id == job_id, Row.index == index)).first()
        if row is None:
            raise NotFoundError(f"row {index} of job {job_id} does not exist")
        return _row_from_row(row)

    def list_rows(self, job_id: str, statuses: Iterable[RowStatus] | None = None) -> list[Row]:
        """Row records of a job in index order, optionally filtered by status."""
        q = select(Row).where(Row.job_id == job_id).order_by(Row.index)
        if statuses is not None:
            q = q.where(Row.status.in_([s.value for s in statuses]))
        with self._tx() as conn:
            return [_row_from_row(r) for r in conn.execute(q)]

    def claim_row(self, job_id: str, index: int, worker: str, lease_seconds: int) -> Claim:
        """Take the lease on a row: ``pending`` -> ``running``, or a ``running`` row whose lease
        expired -> ``running`` with a new lease. Increments ``attempts``.

        A row that is ``done`` (checkpoint exists), ``failed`` or leased by a live worker is
        not claimed; the caller skips it.
        """
        now = utcnow()
        stmt = (
            update(Row)
            .where(
                Row.job_id == job_id,
                Row.index == index,
                or_(
                    Row.status == RowStatus.PENDING.value,
                    and_(Row.status == RowStatus.RUNNING.value, Row.lease_expires_at < now),
                ),
            )
            .values(
                status=RowStatus.RUNNING.value,
                attempts=Row.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                worker=worker,
                started_at=now,
                error=None,
            )
        )
        with self._tx() as conn:
            won = conn.execute(stmt).rowcount == 1
            row = conn.execute(
                select(Row.status, Row.attempts).where(Row.job_id == job_id, Row.index == index)
            ).first()
        if row is None:
            raise NotFoundError(f"row {index} of job {job_id} does not exist")
        return Claim(claimed=won, status=RowStatus(row.status), attempt=row.attempts if won else 0)

    def extend_lease(self, job_id: str, index: int, worker: str, lease_seconds: int) -> bool:
        """Push the lease of a row this worker holds; False if it no longer holds it."""
        stmt = (
            update(Row)
            .where(
                Row.job_id == job_id,
                Row.index == index,
                Row.status == RowStatus.RUNNING.value,
                Row.worker == worker,
            )
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
        with self._tx() as conn:
            return conn.execute(stmt).rowcount == 1

    def complete_row(
        self,
        job_id: str,
        index: int,
        *,
        counts: Sequence[int],
        checksum: str,
        blob_key: str,
        seconds: float,
    ) -> tuple[bool, bool]:
        """Mark a row ``done`` with its per-class pixel counts, in one transaction with the
        last-row check.

        Call only after the row's checkpoint blob is written. If this was the last row not yet
        done, the job moves ``running`` -> ``reducing`` in the same transaction.

        Returns:
            ``(completed, reduce_now)``: ``completed`` is False when the row was already done
            (a duplicate: nothing is counted again); ``reduce_now`` is True for exactly one
            caller, the one that must enqueue the reducer.
        """
        now = utcnow()
        row_stmt = (
            update(Row)
            .where(
                Row.job_id == job_id,
                Row.index == index,
                Row.status.in_([s.value for s in row_sources(RowStatus.DONE)]),
            )
            .values(
                status=RowStatus.DONE.value,
                counts=[int(c) for c in counts],
                checksum=checksum,
                blob_key=blob_key,
                finished_at=now,
                seconds=seconds,
                lease_expires_at=None,
                error=None,
            )
        )
        with self._tx() as conn:
            # Lock the job row first (PostgreSQL: FOR UPDATE; SQLite serialises writers anyway)
            # so two workers finishing the last two rows cannot both miss the reduce trigger.
            conn.execute(select(Job.id).where(Job.id == job_id).with_for_update())
            if conn.execute(row_stmt).rowcount != 1:
                return False, False
            remaining = conn.execute(
                select(func.count())
                .select_from(Row)
                .where(Row.job_id == job_id, Row.status != RowStatus.DONE.value)
            ).scalar_one()
            reduce_now = False
            if remaining == 0:
                job_stmt = (
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
                    .values(status=JobStatus.REDUCING.value, updated_at=now)
                )
                reduce_now = conn.execute(job_stmt).rowcount == 1
        return True, reduce_now

    def fail_row(self, job_id: str, index: int, error: str, max_attempts: int) -> RowStatus:
        """Record a failed attempt of a running row.

        The row goes back to ``pending`` for a retry, or to ``failed`` once it has used
        ``max_attempts``; a ``failed`` row also fails its job with the row's reason.

        Returns:
            The row's new status (``pending`` or ``failed``), or its unchanged status if it was
            not running.
        """
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(
                select(Row.status, Row.attempts).where(Row.job_id == job_id, Row.index == index)
            ).first()
            if row is None:
                raise NotFoundError(f"row {index} of job {job_id} does not exist")
            if row.status != RowStatus.RUNNING.value:
                return RowStatus(row.status)
            target = RowStatus.FAILED if row.attempts >= max_attempts else RowStatus.PENDING
            conn.execute(
                update(Row)
                .where(Row.job_id == job_id, Row.index == index,
                       Row.status == RowStatus.RUNNING.value)
                .values(status=target.value, error=error[:4000], lease_expires_at=None,
                        finished_at=now)
            )
            if target == RowStatus.FAILED:
                conn.execute(
                    update(Job)
                    .where(Job.id == job_id,
                           Job.status.in_([s.value for s in job_sources(JobStatus.FAILED)]))
                    .values(status=JobStatus.FAILED.value, finished_at=now, updated_at=now,
                            error=f"row {index} failed after {row.attempts} attempts: {error}"[:4000])
                )
        return target

    def expire_leases(self, max_attempts: int) -> list[tuple[str, int]]:
        """Return ``running`` rows whose lease has expired (their worker died or was cut off)
        to ``pending``, or to ``failed`` once they have used ``max_attempts`` (the job then
        fails with the reason). Only rows of ``running`` jobs are touched.

        Returns:
            ``(job_id, index)`` of the rows put back to ``pending``, to re-enqueue.
        """
        now = utcnow()
        expired_filter = (
            Row.status == RowStatus.RUNNING.value,
            Row.lease_expires_at < now,
            Row.job_id.in_(select(Job.id).where(Job.status == JobStatus.RUNNING.value)),
        )
        requeue: list[tuple[str, int]] = []
        with self._tx() as conn:
            expired = conn.execute(
                select(Row.job_id, Row.index, Row.attempts, Row.worker).where(*expired_filter)
            ).all()
            for job_id, index, attempts, worker in expired:
                reason = f"lease expired: worker {worker} stopped renewing it"
                target = RowStatus.FAILED if attempts >= max_attempts else RowStatus.PENDING
                moved = conn.execute(
                    update(Row)
                    .where(Row.job_id == job_id, Row.index == index, *expired_filter)
                    .values(status=target.value, lease_expires_at=None, error=reason)
                ).rowcount
                if not moved:
                    continue
                if target == RowStatus.PENDING:
                    requeue.append((job_id, index))
                else:
                    conn.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
                        .values(status=JobStatus.FAILED.value, finished_at=now, updated_at=now,
                                error=f"row {index} failed after {attempts} attempts: {reason}")
                    )
        return requeue

    def reset_rows_for_resume(self, job_id: str) -> list[int]:
        """Return every ``failed`` (and ``running``) row of a job to ``pending``; attempts restart.

        Returns:
            Indices of all rows that are not done, to re-enqueue.
        """
        with self._tx() as conn:
            conn.execute(
                update(Row)
                .where(Row.job_id == job_id, Row.status != RowStatus.DONE.value)
                .values(status=RowStatus.PENDING.value, attempts=0, lease_expires_at=None)
            )
            return list(
                conn.execute(
                    select(Row.index)
                    .where(Row.job_id == job_id, Row.status != RowStatus.DONE.value)
                    .order_by(Row.index)
                ).scalars()
            )

    def progress(self, job_id: str) -> Progress:
        """Row counts by status and pixels segmented so far (done rows x image width)."""
        with self._tx() as conn:
            by_status = dict(
                conn.execute(
                    select(Row.status, func.count()).where(Row.job_id == job_id).group_by(Row.status)
                ).all()
            )
            done_px = conn.execute(
                select(func.coalesce(func.sum(Row.y1 - Row.y0), 0)).where(
                    Row.job_id == job_id, Row.status == RowStatus.DONE.value
                )
            ).scalar_one()
            width = conn.execute(select(Job.width).where(Job.id == job_id)).scalar_one_or_none()
        return Progress(
            total=sum(by_status.values()),
            pending=by_status.get(RowStatus.PENDING.value, 0),
            running=by_status.get(RowStatus.RUNNING.value, 0),
            done=by_status.get(RowStatus.DONE.value, 0),
            failed=by_status.get(RowStatus.FAILED.value, 0),
            pixels_done=int(done_px) * int(width or 0),
        )

    def class_counts(self, job_id: str, n_classes: int) -> list[int]:
        """Exact per-class pixel counts of a job: the sum of its done rows' counts.

        Raises:
            StorageError: a row is not done, or its counts do not have ``n_classes`` entries.
        """
        totals = [0] * n_classes
        for row in self.list_rows(job_id):
            if row.status != RowStatus.DONE.value or row.counts is None:
                raise StorageError(f"row {row.index} of job {job_id} is {row.status}, not done")
            if len(row.counts) != n_classes:
                raise StorageError(
                    f"row {row.index} of job {job_id} has {len(row.counts)} class counts, "
                    f"expected {n_classes}"
                )
            totals = [a + int(b) for a, b in zip(totals, row.counts, strict=True)]
        return totals

    # ---------------------------------------------------------------- models
    def register_model(
        self,
        *,
        name: str,
        version: str,
        sha256: str,
        architecture: str,
        encoder: str,
        classes: list,
        metrics: dict | None = None,
    ) -> bool:
        """Register a model package; idempotent for the same (name, version, sha256).

        Returns:
            True if a new record was inserted.

        Raises:
            StorageError: (name, version) is registered with different weights.
        """
        with self._tx() as conn:
            existing = conn.execute(
                select(ModelRecord.sha256).where(
                    ModelRecord.name == name, ModelRecord.version == version
                )
            ).scalar_one_or_none()
            if existing is not None:
                if existing != sha256:
                    raise StorageError(
                        f"model {name} {version} is already registered with weights sha256 "
                        f"{existing[:12]}..., not {sha256[:12]}...; publish a new version"
                    )
                return False
            conn.execute(
                insert(ModelRecord).values(
                    name=name, version=version, sha256=sha256, architecture=architecture,
                    encoder=encoder, classes=classes, metrics=metrics, created_at=utcnow(),
                )
            )
        return True

    def get_model(self, name: str, version: str | None = None) -> ModelRecord:
        """A registered model; ``version`` None picks the most recently registered one.

        Raises:
            NotFoundError: no such model (the message lists the registered names).
        """
        q = select(ModelRecord).where(ModelRecord.name == name)
        if version is not None:
            q = q.where(ModelRecord.version == version)
        q = q.order_by(ModelRecord.created_at.desc(), ModelRecord.id.desc()).limit(1)
        with self._tx() as conn:
            row = conn.execute(q).first()
            if row is None:
                known = sorted(
                    {f"{n} {v}" for n, v in conn.execute(
                        select(ModelRecord.name, ModelRecord.version))}
                )
        if row is None:
            what = f"{name} {version}" if version else name
            raise NotFoundError(
                f"model {what!r} is not registered; registered models: {known or 'none'}"
            )
        return row[0]

    def list_models(self) -> list[ModelRecord]:
        """All registered model packages, by name and version."""
        with self._tx() as conn:
            return [
                r[0] for r in conn.execute(
                    select(ModelRecord).order_by(ModelRecord.name, ModelRecord.version))
            ]

    # ---------------------------------------------------------------- plumbing
    @contextmanager
    def _tx(self):
        """One transaction in an ORM session; SQLAlchemy errors become :class:`StorageError`."""
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as e:
            raise StorageError(f"job table error ({self.engine.url!r}): {e}") from e



def _job_from_row(row) -> Job:
    job = row[0]
    for attr in ("created_at", "updated_at", "started_at", "finished_at"):
        setattr(job, attr, _aware(getattr(job, attr)))
    return job


def _row_from_row(row) -> Row:
    r = row[0]
    for attr in ("lease_expires_at", "started_at", "finished_at"):
        setattr(r, attr, _aware(getattr(r, attr)))
    return r
