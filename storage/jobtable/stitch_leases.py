"""The streaming stitcher's lease on a job.

One ``pelletseg.stitch`` task at a time may write a job's label map and overlay while its rows
run (``worker/stages/streaming.py``). It holds ``jobs.stitch_worker`` / ``jobs.stitch_lease_expires_at``
like a row lease: taken by one conditional UPDATE (free or expired), renewed while it works,
released when it ends. The reducer waits for its staged outputs only while the lease is live,
so a stitcher that died costs at most one lease before the reducer stitches the rows itself.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from core.states import JobStatus
from storage.jobtable.base import Repository
from storage.jobtable.retries import with_retries
from storage.jobtable.tables import Job, utcnow

#: Job statuses in which a stitcher may hold (or take) the lease: rows running or done.
STITCHABLE = (JobStatus.RUNNING.value, JobStatus.REDUCING.value)


@with_retries  # lost/refused connections retried with backoff (storage/jobtable/retries.py)
class StitchLeases(Repository):
    """Take, renew, release and read a job's stitch lease.

    Raises (every method):
        StorageError: the database failed or is unreachable.
    """

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        """Take the stitch lease of a ``running`` or ``reducing`` job whose lease is free or
        expired; True if ``worker`` now holds it for ``lease_seconds`` (s)."""
        now = utcnow()
        stmt = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.status.in_(STITCHABLE),
                or_(Job.stitch_lease_expires_at.is_(None), Job.stitch_lease_expires_at < now),
            )
            .values(stitch_worker=worker,
                    stitch_lease_expires_at=now + timedelta(seconds=lease_seconds))
        )
        with self._tx() as conn:
            return conn.execute(stmt).rowcount == 1

    def extend(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        """Push the stitch lease ``worker`` holds; False if it no longer holds a live one (it
        expired and was taken over, or was released)."""
        now = utcnow()
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.stitch_worker == worker,
                   Job.stitch_lease_expires_at >= now)
            .values(stitch_lease_expires_at=now + timedelta(seconds=lease_seconds))
        )
        with self._tx() as conn:
            return conn.execute(stmt).rowcount == 1

    def release(self, job_id: str, worker: str) -> bool:
        """Give the stitch lease up (done or gave up); False if ``worker`` did not hold it."""
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.stitch_worker == worker)
            .values(stitch_lease_expires_at=None)
        )
        with self._tx() as conn:
            return conn.execute(stmt).rowcount == 1

    def state(self, job_id: str) -> tuple[str | None, bool]:
        """``(holder, live)``: the last stitcher that took the lease (None if none ever did)
        and whether its lease is still unexpired."""
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(
                select(Job.stitch_worker,
                       and_(Job.stitch_lease_expires_at.is_not(None),
                            Job.stitch_lease_expires_at >= now))
                .where(Job.id == job_id)
            ).first()
        return (None, False) if row is None else (row[0], bool(row[1]))
