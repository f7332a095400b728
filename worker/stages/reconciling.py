"""The reconciler: the job table, not the broker, decides what still has to run.

Run periodically by every worker process (``worker/liveness.py``, every
``PELLETSEG_RECONCILE_SECONDS``), by the ``pelletseg.reconcile`` task of a ``--beat`` worker, and
by ``pelletseg run``'s progress loop; concurrent passes are safe (conditional UPDATEs). It
gives back the rows and stages of workers whose heartbeat stopped (dead after three missed
beats: seconds, not a lease), returns rows whose lease
expired to ``pending`` and re-enqueues them, and re-enqueues rows left ``pending`` longer than
``pending_timeout_seconds`` after they were enqueued, so a row whose worker was SIGKILLed, or
whose message a broker lost, still gets done; after ``max_attempts`` the row and its job fail.
A job left ``reducing`` for ``reduce_timeout_seconds`` gets its reducer enqueued again, and a
job left ``queued`` or ``planning`` for ``pending_timeout_seconds`` its planner (the message
was lost, e.g. a broker restarted without persistence). Duplicate messages are harmless:
claims are exclusive, a planner re-plans idempotently (rows are inserted once, the move to
``running`` is conditional) and a stage of a job past that stage is a no-op.
"""

from __future__ import annotations

import structlog

from core.states import JobStatus
from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK
from worker.context import WorkerContext
from worker.stages.notifying import sweep as sweep_webhooks

log = structlog.get_logger(__name__)


def reconcile(ctx: WorkerContext) -> list[tuple[str, int]]:
    """Expire stale leases, find pending rows whose message was lost, and (re-)enqueue them.

    Returns:
        ``(job_id, row index)`` of every row re-enqueued.

    Raises:
        StorageError: the job table is unreachable.
    """
    requeued = ctx.table.heartbeats.release_dead(ctx.settings.max_attempts)
    requeued += ctx.table.recovery.expire_leases(
        ctx.settings.max_attempts, ctx.settings.pending_timeout_seconds
    )
    for job_id, index in requeued:
        ctx.enqueue(ROW_TASK, job_id, index)
    if requeued:
        log.warning("reconcile.requeued", rows=len(requeued))
    settings = ctx.settings
    for job_id in ctx.table.heartbeats.dead_stages([JobStatus.PLANNING]):
        log.warning("reconcile.dead_planner", job_id=job_id)
        ctx.enqueue(PLAN_TASK, job_id)
    for job_id in ctx.table.heartbeats.dead_stages([JobStatus.REDUCING]):
        log.warning("reconcile.dead_reducer", job_id=job_id)
        ctx.enqueue(REDUCE_TASK, job_id)
    for job_id in ctx.table.recovery.stale_jobs([JobStatus.REDUCING], settings.reduce_timeout_seconds):
        log.warning("reconcile.reducer_requeued", job_id=job_id)
        ctx.enqueue(REDUCE_TASK, job_id)
    planning = [JobStatus.QUEUED, JobStatus.PLANNING]
    for job_id in ctx.table.recovery.stale_jobs(planning, settings.pending_timeout_seconds):
        log.warning("reconcile.planner_requeued", job_id=job_id)
        ctx.enqueue(PLAN_TASK, job_id)
    notified = sweep_webhooks(ctx)  # due webhook deliveries (retries, lost messages)
    if notified:
        log.info("reconcile.webhooks", jobs=len(notified))
    return requeued
