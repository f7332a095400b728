"""Aggregates of the job table for monitoring (``GET /metrics``), computed at scrape time.

API processes are stateless, so every figure comes from the job table: a handful of
aggregate queries, each O(jobs) or O(rows of jobs that are not succeeded), never a scan of
every row record ever written.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, and_, case, cast, func, select
from sqlalchemy.exc import SQLAlchemyError

from core.states import JOB_TERMINAL, JobStatus, RowStatus
from storage.errors import StorageError
from storage.jobtable.table import JobTable
from storage.jobtable.tables import Job, Row

#: Upper bounds (s) of the reducer-duration histogram buckets.
REDUCE_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass(frozen=True)
class TableStats:
    """One snapshot of the job table.

    Attributes:
        jobs_by_status: Job count per status (every status present, 0 if none).
        active_rows_by_status: Row records of jobs that have not ended, per row status.
        rows_done: Row records done, ever (monotonic: a counter; a deleted job keeps its row
            records).
        pixels_done: Image pixels segmented, ever (monotonic: a counter; px).
        reduce_buckets: ``(upper bound s, jobs with reduce_seconds <= bound)``, cumulative.
        reduce_count, reduce_sum: Succeeded jobs with a recorded reducer time; their sum (s).
        webhooks_by_status: Jobs per webhook delivery status (pending, sending, ...).
    """

    jobs_by_status: dict[str, int]
    active_rows_by_status: dict[str, int]
    rows_done: int
    pixels_done: int
    reduce_buckets: list[tuple[float, int]]
    reduce_count: int
    reduce_sum: float
    webhooks_by_status: dict[str, int]


def table_stats(table: JobTable) -> TableStats:
    """Read :class:`TableStats` from the job table in one read-only transaction.

    ``rows_done`` counts the ``rows_total`` of succeeded jobs (all their rows are done) plus
    done rows of other jobs; ``pixels_done`` likewise with width x height. Reducer durations
    come from ``outputs.reduce_seconds``, written by the reducer on success.

    Raises:
        StorageError: the job table is unreachable.
    """
    succeeded = Job.status == JobStatus.SUCCEEDED.value
    active = [s.value for s in JobStatus if s not in JOB_TERMINAL]
    reduce_s = Job.outputs["reduce_seconds"].as_float()
    try:
        with table.engine.connect() as conn:
            by_status = dict(conn.execute(
                select(Job.status, func.count()).group_by(Job.status)).all())
            active_rows = dict(conn.execute(
                select(Row.status, func.count())
                .select_from(Row)
                .join(Job, Job.id == Row.job_id)
                .where(Job.status.in_(active))
                .group_by(Row.status)).all())
            image_px = cast(Job.width, BigInteger) * Job.height
            done_jobs_rows, done_jobs_px = conn.execute(
                select(func.coalesce(func.sum(Job.rows_total), 0),
                       func.coalesce(func.sum(image_px), 0)).where(succeeded)
            ).one()
            strip_px = cast(Row.y1 - Row.y0, BigInteger) * Job.width
            other_rows, other_px = conn.execute(
                select(func.count(), func.coalesce(func.sum(strip_px), 0))
                .select_from(Row)
                .join(Job, Job.id == Row.job_id)
                .where(~succeeded, Row.status == RowStatus.DONE.value)
            ).one()
            # a deleted job keeps its outputs record: its reducer time stays counted, so the
            # histogram (a counter) never goes down
            reduced = Job.status.in_([JobStatus.SUCCEEDED.value, JobStatus.DELETED.value])
            has_reduce = and_(reduced, reduce_s.is_not(None))
            columns = [func.count(), func.coalesce(func.sum(reduce_s), 0.0)] + [
                func.coalesce(func.sum(case((reduce_s <= bound, 1), else_=0)), 0)
                for bound in REDUCE_BUCKETS
            ]
            reduce_row = conn.execute(select(*columns).where(has_reduce)).one()
            webhooks = dict(conn.execute(
                select(Job.webhook_status, func.count())
                .where(Job.webhook_status.is_not(None))
                .group_by(Job.webhook_status)).all())
    except SQLAlchemyError as e:
        raise StorageError(f"job table at {table.engine.url!r} does not answer: {e}") from e
    return TableStats(
        jobs_by_status={s.value: int(by_status.get(s.value, 0)) for s in JobStatus},
        active_rows_by_status={s.value: int(active_rows.get(s.value, 0)) for s in RowStatus},
        rows_done=int(done_jobs_rows) + int(other_rows),
        pixels_done=int(done_jobs_px) + int(other_px),
        reduce_buckets=[(b, int(n)) for b, n in zip(REDUCE_BUCKETS, reduce_row[2:], strict=True)],
        reduce_count=int(reduce_row[0]),
        reduce_sum=float(reduce_row[1]),
        webhooks_by_status={str(k): int(v) for k, v in webhooks.items()},
    )
