"""Recovery of lost work in the job table: what the
reconciler, the spot watcher and resume do when a worker, a message or a whole job was lost.

Like :mod:`storage.jobtable.row_records`, every change is a conditional UPDATE checked by ``rowcount``, so two
reconcilers (or a reconciler racing a live worker) cannot both move the same row.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import case, select, update

from core.states import JobStatus, RowStatus
from storage.jobtable.base import Repository
from storage.jobtable.retries import with_retries
from storage.jobtable.row_records import fail_job_for_row, not_live_holder
from storage.jobtable.tables import Job, Row, utcnow


@with_retries  # lost/refused connections retried with backoff (storage/jobtable/retries.py)
class Recovery(Repository):
    """Lease expiry, lost messages, spot release, stuck reducers and resume.

    Raises (every method):
        StorageError: the database failed or is unreachable.
    """

    def expire_leases(
        self, max_attempts: int, pending_timeout_seconds: float | None = None
    ) -> list[tuple[str, int]]:
        """Return ``running`` rows whose lease has expired (their worker died or was cut off)
        to ``pending``, or to ``failed`` once they have used ``max_attempts`` (the job then
        fails with the reason). With ``pending_timeout_seconds``, also pick ``pending`` rows
        enqueued longer ago than that (their message was lost: e.g. a worker killed between
        delivery and claim, with Redis/SQS hiding the message until its visibility timeout)
        and mark them enqueued now. Only rows of ``running`` jobs are touched.

        Returns:
            ``(job_id, index)`` of the rows to (re-)enqueue.
        """
        now = utcnow()
        expired_filter = (
            Row.status == RowStatus.RUNNING.value,
            Row.lease_expires_at < now,
            not_live_holder(now),  # a live worker's long row is never taken from it
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
                    conn.execute(update(Row).where(Row.job_id == job_id, Row.index == index)
                                 .values(enqueued_at=now))
                    requeue.append((job_id, index))
                else:
                    fail_job_for_row(conn, job_id, index, attempts, reason, now)
        if pending_timeout_seconds is not None:
            requeue += self.requeue_pending(pending_timeout_seconds)
        return requeue

    def requeue_pending(self, seconds: float, *, peek: bool = False) -> list[tuple[str, int]]:
        """Pick the ``pending`` rows of ``running`` jobs enqueued more than ``seconds`` ago
        (their message was lost or is hidden: e.g. a worker killed between delivery and claim,
        or one that stopped with a long poll in flight, with Redis/SQS hiding the message until
        its visibility timeout) and mark them enqueued now (conditional UPDATE), so each is
        returned once per ``seconds``. With ``peek`` nothing is marked and at most one row is
        returned (is there any?).

        Returns:
            ``(job_id, index)`` of the rows to enqueue again.
        """
        now = utcnow()
        stale = (
            Row.status == RowStatus.PENDING.value,
            Row.enqueued_at < now - timedelta(seconds=seconds),
            Row.job_id.in_(select(Job.id).where(Job.status == JobStatus.RUNNING.value)),
        )
        return self._touch_stale(Row, (Row.job_id, Row.index), stale, {"enqueued_at": now},
                                 peek=peek)

    def release_rows(self, workers: Iterable[str], reason: str) -> list[tuple[str, int]]:
        """Hand back every ``running`` row leased by one of ``workers`` (``host:pid`` ids), e.g.
        on a spot interruption notice: ``running -> pending`` without costing an attempt
        (``attempts`` goes back down by one), marked enqueued now, ``reason`` recorded.

        A row another worker has taken over meanwhile is left alone (conditional UPDATE on
        the row's worker).

        Returns:
            ``(job_id, index)`` of the rows released, to enqueue again.
        """
        workers = list(workers)
        if not workers:
            return []
        held = (Row.status == RowStatus.RUNNING.value, Row.worker.in_(workers))
        released: list[tuple[str, int]] = []
        with self._tx() as conn:
            rows = conn.execute(select(Row.job_id, Row.index, Row.worker).where(*held)).all()
            for job_id, index, worker in rows:
                moved = conn.execute(
                    update(Row)
                    .where(Row.job_id == job_id, Row.index == index,
                           Row.status == RowStatus.RUNNING.value, Row.worker == worker)
                    .values(status=RowStatus.PENDING.value,
                            attempts=case((Row.attempts > 0, Row.attempts - 1), else_=0),
                            lease_expires_at=None, error=reason[:4000], enqueued_at=utcnow())
                ).rowcount
                if moved:
                    released.append((job_id, index))
        return released

    def stale_jobs(self, statuses: Iterable[JobStatus], timeout_seconds: float, *,
                   unclaimed: bool = False, peek: bool = False) -> list[str]:
        """Jobs in one of ``statuses`` with no change for ``timeout_seconds``: their stage's
        message was lost (a broker restarted without persistence, a publish that failed after
        the commit, a worker killed mid-plan on a broker that dropped the message). Each is
        marked changed now, so it is returned once per timeout. With ``unclaimed`` only jobs
        whose stage no worker has claimed (``stage_worker`` empty); with ``peek`` nothing is
        marked and at most one job is returned (is there any?).

        Returns:
            Ids of the jobs whose stage task (``plan_job`` for ``queued``/``planning``,
            ``reduce_job`` for ``reducing``) must be enqueued again.
        """
        now = utcnow()
        stale = (Job.status.in_([s.value for s in statuses]),
                 Job.updated_at < now - timedelta(seconds=timeout_seconds))
        if unclaimed:
            stale += (Job.stage_worker.is_(None),)
        return [job_id for (job_id,) in self._touch_stale(Job, (Job.id,), stale,
                                                             {"updated_at": now}, peek=peek)]

    def _touch_stale(self, table, keys: tuple, stale: tuple, touch: dict, *,
                     peek: bool) -> list[tuple]:
        """The ``keys`` of the records of ``table`` matching ``stale``, in key order, each
        marked by ``touch`` (a conditional UPDATE that matches ``stale`` again, so a record
        another reconciler marked meanwhile is left out and each is returned once per
        timeout); with ``peek`` nothing is marked and at most one is returned."""
        with self._tx() as conn:
            found = conn.execute(select(*keys).where(*stale).order_by(*keys)
                                 .limit(1 if peek else None)).all()
            if peek:
                return [tuple(values) for values in found]
            marked = []
            for values in found:
                same = [key == value for key, value in zip(keys, values, strict=True)]
                if conn.execute(update(table).where(*same, *stale).values(**touch)).rowcount:
                    marked.append(tuple(values))
        return marked

    def reset_rows_for_resume(self, job_id: str) -> list[int]:
        """Return every ``failed`` (and ``running``) row of a job to ``pending``; attempts restart.

        Returns:
            Indices of all rows that are not done, to re-enqueue.
        """
        with self._tx() as conn:
            conn.execute(
                update(Row)
                .where(Row.job_id == job_id, Row.status != RowStatus.DONE.value)
                .values(status=RowStatus.PENDING.value, attempts=0, lease_expires_at=None,
                        enqueued_at=utcnow())
            )
            return list(
                conn.execute(
                    select(Row.index)
                    .where(Row.job_id == job_id, Row.status != RowStatus.DONE.value)
                    .order_by(Row.index)
                ).scalars()
            )
