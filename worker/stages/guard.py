"""The planner's and reducer's stage claim with bounded attempts.

A stage task first claims its job's stage (``jobs.stage_worker``, one more
``jobs.stage_attempts``; :meth:`~storage.jobtable.job_records.JobRecords.claim_stage`), so a
duplicate message skips while a live worker runs it and the reconciler re-enqueues it when
that worker dies (``worker/stages/reconciling.py``). A stage that raises is enqueued again
until it has had ``PELLETSEG_MAX_ATTEMPTS`` attempts; then its job fails with the reason, so
no job stays ``planning`` or ``reducing`` with nothing moving it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog

from core.states import JobStatus
from storage.errors import StorageError
from worker.context import WorkerContext
from worker.errors import describe

log = structlog.get_logger(__name__)
T = TypeVar("T")

__all__ = ["guarded_stage", "plan_guarded", "reduce_guarded"]


def guarded_stage(ctx: WorkerContext, job_id: str, name: str, task: str,
                  statuses: list[JobStatus], stage: Callable[[], T]) -> T | None:
    """Run ``stage()`` (the planner or reducer of ``job_id``) under its stage claim.

    Args:
        name: ``planner`` or ``reducer`` (for the job's error).
        task: The stage's task name, enqueued again after a failed attempt.
        statuses: Job statuses the stage runs in (``queued``/``planning``; ``reducing``).

    Returns:
        The stage's result; None when the job was not in ``statuses``, a live worker runs
        the stage, or this attempt failed (enqueued again, or the job failed after
        ``max_attempts`` attempts).

    Raises:
        StorageError: the job table is unreachable (the message is redelivered).
    """
    attempt = ctx.table.jobs.claim_stage(job_id, statuses, ctx.worker_id)
    if not attempt:
        log.info("stage.skip", job_id=job_id, stage=name)
        return None
    try:
        result = stage()
    except StorageError:
        ctx.table.jobs.release_stage(job_id, ctx.worker_id)
        raise
    except Exception as e:  # a bug or an unforeseen input: bounded, then the job fails
        limit = max(1, ctx.settings.max_attempts)
        reason = f"{name} failed on attempt {attempt} of {limit}: {describe(e)}"
        log.exception("stage.error", job_id=job_id, stage=name, attempt=attempt)
        if attempt >= limit:
            ctx.table.jobs.transition(job_id, JobStatus.FAILED, error=reason[:4000],
                                      stage_worker=None)
            return None
        ctx.table.jobs.release_stage(job_id, ctx.worker_id)
        ctx.enqueue(task, job_id)
        return None
    ctx.table.jobs.release_stage(job_id, ctx.worker_id)
    return result


def plan_guarded(ctx: WorkerContext, job_id: str) -> list[int] | None:
    """:func:`worker.stages.planning.plan_job` under its stage claim (the ``pelletseg.plan``
    task)."""
    from queues.names import PLAN_TASK
    from worker.stages.planning import plan_job

    return guarded_stage(ctx, job_id, "planner", PLAN_TASK,
                         [JobStatus.QUEUED, JobStatus.PLANNING], lambda: plan_job(ctx, job_id))


def reduce_guarded(ctx: WorkerContext, job_id: str) -> dict | None:
    """:func:`worker.stages.reducing.reduce_job` under its stage claim (the
    ``pelletseg.reduce`` task)."""
    from queues.names import REDUCE_TASK
    from worker.stages.reducing import reduce_job

    return guarded_stage(ctx, job_id, "reducer", REDUCE_TASK, [JobStatus.REDUCING],
                         lambda: reduce_job(ctx, job_id))
