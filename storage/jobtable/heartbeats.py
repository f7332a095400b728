"""Worker heartbeats: which worker processes are live, and giving back what dead ones held.

Each worker process (``host:pid``) beats every ``PELLETSEG_HEARTBEAT_SECONDS`` (s) from a
background thread (``worker/liveness.py``); a beat also keeps the leases of the rows it holds.
A worker is **dead** once three beats are missed (``expires_at`` passed) or when it stopped
cleanly (``stopped_at``). Any live worker's reconcile pass returns a dead worker's ``running``
rows to ``pending`` and re-enqueues them; every change is a conditional UPDATE checked by
``rowcount``, so several reconcilers racing each other (or a live worker) cannot both move
the same row.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from core.states import JobStatus, RowStatus
from storage.jobtable.base import Repository
from storage.jobtable.retries import with_retries
from storage.jobtable.row_records import MISSED_BEATS, fail_job_for_row, live_workers
from storage.jobtable.tables import Job, Row, WorkerBeat, utcnow

__all__ = ["MISSED_BEATS", "Beat", "Heartbeats"]


class Beat(NamedTuple):
    """Outcome of :meth:`Heartbeats.beat`."""

    alive: bool
    requeue: list[tuple[str, int]]


@with_retries  # lost/refused connections retried with backoff (storage/jobtable/retries.py)
class Heartbeats(Repository):
    """Register, beat, stop and judge worker processes; give back a dead worker's rows.

    Raises (every method):
        StorageError: the database failed or is unreachable.
    """

    def register(self, worker: str, interval: float,
                 in_flight: Collection[tuple[str, int]] = (), since: datetime | None = None
                 ) -> list[tuple[str, int]]:
        """Start beating as ``worker`` (``host:pid``) every ``interval`` s.

        A row still ``running`` under this id that the process does not have ``in_flight``
        belongs to an earlier process with the same ``host:pid`` (a restarted container gets
        the same host name and pid) that died, or to a task of this process that stopped
        without an outcome, and goes back to ``pending`` here. Rows ``in_flight`` (read at UTC
        ``since``, default now) and rows claimed after ``since`` are this process's own work
        and stay: the first task can claim a row before the heartbeat thread registers, and
        a process judged dead registers again while its rows run.

        Returns:
            ``(job_id, index)`` of the rows given back, to enqueue again.
        """
        now = utcnow()
        since = since or now
        expires = now + timedelta(seconds=MISSED_BEATS * interval)
        with self._tx() as conn:
            moved = conn.execute(
                update(WorkerBeat).where(WorkerBeat.id == worker)
                .values(started_at=now, beat_at=now, expires_at=expires, stopped_at=None)
            ).rowcount
        if not moved:
            try:
                with self._tx() as conn:
                    conn.execute(WorkerBeat.__table__.insert().values(
                        id=worker, started_at=now, beat_at=now, expires_at=expires))
            except Exception as e:
                if not isinstance(getattr(e, "__cause__", None), IntegrityError) \
                        and not isinstance(e, IntegrityError):
                    raise
        return self._give_back(
            [Row.worker == worker, Row.started_at < since],
            f"its worker {worker} was restarted (same host:pid) or stopped working on it "
            "before finishing it", now, keep=in_flight)

    def beat(self, worker: str, interval: float, lease_seconds: float,
             in_flight: Collection[tuple[str, int]] = (), since: datetime | None = None
             ) -> Beat:
        """One beat: push ``worker``'s expiry by three ``interval`` s and the lease of every
        row it has ``in_flight`` by ``lease_seconds`` (s).

        With ``since`` (the UTC time ``in_flight`` was read), every other ``running`` row the
        table says ``worker`` holds, claimed before ``since``, goes back to ``pending``: its
        task stopped without recording an outcome (a dropped connection at ``complete``,
        a task killed by its time limit), and a live worker's row is never taken over by
        lease expiry (:func:`~storage.jobtable.row_records.not_live_holder`), so without this
        it would stay held for ever. Without ``since`` nothing is handed back.

        Returns:
            :class:`Beat`: ``alive`` is False if the worker was judged dead meanwhile (its
            rows may be gone: the caller registers again); ``requeue`` lists the
            ``(job_id, index)`` handed back, to enqueue again.
        """
        now = utcnow()
        with self._tx() as conn:
            alive = conn.execute(
                update(WorkerBeat)
                .where(WorkerBeat.id == worker, WorkerBeat.stopped_at.is_(None),
                       WorkerBeat.expires_at > now)
                .values(beat_at=now, expires_at=now + timedelta(seconds=MISSED_BEATS * interval))
            ).rowcount == 1
            for job_id, index in in_flight if alive else ():
                conn.execute(
                    update(Row)
                    .where(Row.job_id == job_id, Row.index == index, Row.worker == worker,
                           Row.status == RowStatus.RUNNING.value)
                    .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
                )
        if not alive or since is None:
            return Beat(alive, [])
        return Beat(True, self._give_back(
            [Row.worker == worker, Row.started_at < since],
            f"its worker {worker} is live but stopped working on it without recording an "
            "outcome (e.g. the job table dropped the connection)", now, keep=in_flight))

    def stop(self, worker: str) -> None:
        """Mark ``worker`` stopped (a clean shutdown): it is dead at once."""
        with self._tx() as conn:
            conn.execute(update(WorkerBeat).where(WorkerBeat.id == worker)
                         .values(stopped_at=utcnow()))

    def is_live(self, worker: str) -> bool:
        """True if ``worker`` beat within its last three intervals and has not stopped."""
        with self._tx() as conn:
            return conn.execute(
                live_workers(utcnow()).where(WorkerBeat.id == worker)).first() is not None

    def registered(self, workers: list[str]) -> set[str]:
        """Which of ``workers`` ever registered a heartbeat (live or dead)."""
        if not workers:
            return set()
        with self._tx() as conn:
            return set(conn.execute(select(WorkerBeat.id).where(WorkerBeat.id.in_(workers)))
                       .scalars())

    def live(self) -> list[str]:
        """Ids of every live worker."""
        with self._tx() as conn:
            return list(conn.execute(live_workers(utcnow())).scalars())

    def release_dead(self, max_attempts: int) -> list[tuple[str, int]]:
        """Return every ``running`` row of a ``running`` job whose worker is registered and
        dead to ``pending`` (or ``failed`` once it has used ``max_attempts``; its job then fails
        with the reason). Rows of workers that never registered are left to their lease.

        Returns:
            ``(job_id, index)`` of the rows to enqueue again.
        """
        now = utcnow()
        dead = select(WorkerBeat.id).where(
            or_(WorkerBeat.stopped_at.is_not(None), WorkerBeat.expires_at <= now))
        return self._give_back([Row.worker.in_(dead)], "its worker {worker} died (no heartbeat "
                               f"for {MISSED_BEATS} beats) or stopped", now, max_attempts)

    def _give_back(self, where: list, reason: str, now, max_attempts: int | None = None,
                   keep: Collection[tuple[str, int]] = ()) -> list[tuple[str, int]]:
        """Move every ``running`` row of a ``running`` job matching ``where``, except the
        ``(job_id, index)`` in ``keep`` (a worker's rows in flight), to ``pending`` (or
        ``failed`` past ``max_attempts``) with ``reason`` (``{worker}`` filled in), each by a
        conditional UPDATE; returns the rows moved to ``pending``."""
        keep = set(keep)
        held = (
            Row.status == RowStatus.RUNNING.value,
            Row.job_id.in_(select(Job.id).where(Job.status == JobStatus.RUNNING.value)),
            *where,
        )
        requeue: list[tuple[str, int]] = []
        with self._tx() as conn:
            rows = conn.execute(select(Row.job_id, Row.index, Row.attempts, Row.worker)
                                .where(*held)).all()
            for job_id, index, attempts, worker in rows:
                if (job_id, index) in keep:
                    continue
                why = reason.format(worker=worker)
                failed = max_attempts is not None and attempts >= max_attempts
                target = RowStatus.FAILED if failed else RowStatus.PENDING
                moved = conn.execute(
                    update(Row)
                    .where(Row.job_id == job_id, Row.index == index, Row.worker == worker,
                           *held)
                    .values(status=target.value, lease_expires_at=None, error=why,
                            enqueued_at=now)
                ).rowcount
                if not moved:
                    continue
                if failed:
                    fail_job_for_row(conn, job_id, index, attempts, why, now)
                else:
                    requeue.append((job_id, index))
        return requeue

    def dead_stages(self, statuses: list[JobStatus]) -> list[str]:
        """Jobs in one of ``statuses`` whose stage (planner or reducer) was claimed by a
        worker that is now dead: the claim is cleared (conditional UPDATE), once per death.

        Returns:
            Ids of the jobs whose stage task must be enqueued again.
        """
        now = utcnow()
        dead = select(WorkerBeat.id).where(
            or_(WorkerBeat.stopped_at.is_not(None), WorkerBeat.expires_at <= now))
        cond = (Job.status.in_([s.value for s in statuses]), Job.stage_worker.in_(dead))
        found: list[str] = []
        with self._tx() as conn:
            for (job_id,) in conn.execute(select(Job.id).where(*cond)).all():
                if conn.execute(update(Job).where(Job.id == job_id, *cond)
                                .values(stage_worker=None, updated_at=now)).rowcount:
                    found.append(job_id)
        return found

    def holder_live(self, worker: str | None) -> bool:
        """True if ``worker`` is set and live (helper for takeover checks)."""
        return worker is not None and self.is_live(worker)
