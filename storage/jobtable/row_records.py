"""Row records: one per row of a job (``rows_per_task`` tile rows).

A row record is one strip of tile rows: the unit of work, lease and checkpoint. Every state
change is one conditional UPDATE checked by ``rowcount``, so racing workers and duplicate
deliveries cannot double count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update

from core.states import JobStatus, RowStatus, job_sources, row_sources
from storage.errors import NotFoundError, StorageError
from storage.jobtable.base import Repository
from storage.jobtable.engine import as_utc
from storage.jobtable.retries import with_retries
from storage.jobtable.tables import Job, Row, WorkerBeat, utcnow
from storage.jobtable.webhook_outbox import arm_webhook


@dataclass(frozen=True)
class Claim:
    """Outcome of :meth:`RowRecords.claim`.

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


def fail_job_for_row(conn, job_id: str, index: int, attempts: int, reason: str, now) -> None:
    """In the caller's transaction: fail a job that has not ended because its row ``index``
    failed for good (``reason``), arming its webhook in the same UPDATE."""
    conn.execute(
        update(Job)
        .where(Job.id == job_id,
               Job.status.in_([s.value for s in job_sources(JobStatus.FAILED)]))
        .values(status=JobStatus.FAILED.value, finished_at=now, updated_at=now,
                **arm_webhook(JobStatus.FAILED, now),
                error=f"row {index} failed after {attempts} attempt{'' if attempts == 1 else 's'}: "
                      f"{reason}"[:4000])
    )


#: Heartbeats a worker may miss before it counts as dead (storage/jobtable/heartbeats.py).
MISSED_BEATS = 3


def live_workers(now):
    """SELECT of the ids of the workers live at ``now`` (beat within their last three
    intervals, not stopped), for ``IN``/``NOT IN`` conditions."""
    return select(WorkerBeat.id).where(WorkerBeat.stopped_at.is_(None),
                                       WorkerBeat.expires_at > now)


def not_live_holder(now):
    """Condition: a row's lease holder is not a live worker, so its expired lease may be taken
    over (a live worker's long row is never taken from it)."""
    return or_(Row.worker.is_(None), Row.worker.not_in(live_workers(now)))


def _row_from_row(row) -> Row:
    return as_utc(row[0], "lease_expires_at", "started_at", "finished_at")


@with_retries  # lost/refused connections retried with backoff (storage/jobtable/retries.py)
class RowRecords(Repository):
    """The ``rows`` table: claim, renew, complete and fail rows; progress and counts.

    Raises (every method):
        StorageError: the database failed or is unreachable.
        NotFoundError: a row that must exist does not.
    """

    def insert(self, job_id: str, bounds: Sequence[tuple[int, int]]) -> int:
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
                         attempts=0, enqueued_at=utcnow())
                    for i, (y0, y1) in enumerate(bounds)
                ],
            )
        return len(bounds)

    def get(self, job_id: str, index: int) -> Row:
        """Load one row record.

        Raises:
            NotFoundError: the row does not exist.
        """
        with self._tx() as conn:
            row = conn.execute(select(Row).where(Row.job_id == job_id, Row.index == index)).first()
        if row is None:
            raise NotFoundError(f"row {index} of job {job_id} does not exist")
        return _row_from_row(row)

    def list(self, job_id: str, statuses: Iterable[RowStatus] | None = None) -> list[Row]:
        """Row records of a job in index order, optionally filtered by status."""
        q = select(Row).where(Row.job_id == job_id).order_by(Row.index)
        if statuses is not None:
            q = q.where(Row.status.in_([s.value for s in statuses]))
        with self._tx() as conn:
            return [_row_from_row(r) for r in conn.execute(q)]

    def leased(self, job_id: str) -> list[str | None]:
        """The holders (worker ids; None for a holder not recorded) of a job's ``running``
        rows whose lease has not expired: work that may still store a checkpoint."""
        q = select(Row.worker).where(Row.job_id == job_id, Row.status == RowStatus.RUNNING.value,
                                     Row.lease_expires_at > utcnow())
        with self._tx() as conn:
            return [worker for (worker,) in conn.execute(q)]

    def claim(self, job_id: str, index: int, worker: str, lease_seconds: int) -> Claim:
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
                    and_(Row.status == RowStatus.RUNNING.value, Row.lease_expires_at < now,
                         not_live_holder(now)),
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

    def complete(
        self,
        job_id: str,
        index: int,
        *,
        counts: Sequence[int],
        checksum: str,
        blob_key: str,
        seconds: float,
        inference: Mapping[str, Any] | None = None,
        worker: str | None = None,
    ) -> tuple[bool, bool]:
        """Mark a row ``done`` with its per-class pixel counts, in one transaction with the
        last-row check.

        ``worker``: complete only a row this worker holds (``segment_row`` passes its own id):
        a worker whose row was taken over while it wrote (it was judged dead in a job-table
        outage its calls waited out) must not record its counts beside the strip the new
        holder writes. None: whoever holds it (tests, tools).

        ``inference`` records how the labels were computed (:attr:`Row.inference
        <storage.jobtable.tables.Row.inference>`); None where that is unknown (a checkpoint
        written before it was recorded).

        Call only after the row's checkpoint blob is written. If this was the last row not yet
        done, the job moves ``running`` -> ``reducing`` in the same transaction.

        Returns:
            ``(completed, reduce_now)``: ``completed`` is False when the row was already done
            or is held by another worker than ``worker`` (a duplicate: nothing is counted);
            ``reduce_now`` is True for exactly one caller, the one that must enqueue the
            reducer.
        """
        now = utcnow()
        row_stmt = (
            update(Row)
            .where(
                Row.job_id == job_id,
                Row.index == index,
                Row.status.in_([s.value for s in row_sources(RowStatus.DONE)]),
                *([] if worker is None else [Row.worker == worker]),
            )
            .values(
                status=RowStatus.DONE.value,
                counts=[int(c) for c in counts],
                checksum=checksum,
                blob_key=blob_key,
                finished_at=now,
                seconds=seconds,
                inference=None if inference is None else dict(inference),
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

    def fail(self, job_id: str, index: int, error: str, max_attempts: int) -> RowStatus:
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
                        enqueued_at=now,
                        finished_at=now)
            )
            if target == RowStatus.FAILED:
                fail_job_for_row(conn, job_id, index, row.attempts, error, now)
        return target

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
        for row in self.list(job_id):
            if row.status != RowStatus.DONE.value or row.counts is None:
                raise StorageError(f"row {row.index} of job {job_id} is {row.status}, not done")
            if len(row.counts) != n_classes:
                raise StorageError(
                    f"row {row.index} of job {job_id} has {len(row.counts)} class counts, "
                    f"expected {n_classes}"
                )
            totals = [a + int(b) for a, b in zip(totals, row.counts, strict=True)]
        return totals
