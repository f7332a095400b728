"""Celery tasks: thin wrappers that unpack the message and call the stage functions.

Start a worker with ``celery -A worker.tasks worker -Q plan,rows,reduce`` (``pelletseg run``
does this for you). Settings come from ``PELLETSEG_*`` environment variables.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from celery import Celery

from storage.queues import PLAN_TASK, RECONCILE_TASK, REDUCE_TASK, ROW_TASK, make_celery, send
from storage.settings import Settings, get_settings
from worker.context import WorkerContext


def register_tasks(app: Celery, context: Callable[[], WorkerContext]) -> None:
    """Define pelletseg's three tasks on ``app``; ``context()`` gives the process's
    :class:`WorkerContext` (called inside the task, i.e. after the worker forked)."""

    @app.task(name=PLAN_TASK, shared=False)
    def plan_job(job_id: str) -> int:
        """Plan a job; returns the number of rows enqueued."""
        from worker.planning import plan_job as plan

        return len(plan(context(), job_id))

    @app.task(name=ROW_TASK, shared=False)
    def segment_row(job_id: str, index: int) -> str:
        """Segment one row record; returns what happened (``done``, ``duplicate``, ...)."""
        from worker.segmenting import segment_row as segment

        return segment(context(), job_id, index)

    @app.task(name=RECONCILE_TASK, shared=False)
    def reconcile() -> int:
        """Re-enqueue rows whose lease expired; returns how many."""
        from worker.reconciling import reconcile as run_reconcile

        return len(run_reconcile(context()))

    @app.task(name=REDUCE_TASK, shared=False)
    def reduce_job(job_id: str) -> bool:
        """Stitch a job's rows into its outputs; returns True if this call finished the job."""
        from worker.reducing import reduce_job as reduce

        return reduce(context(), job_id) is not None


def make_worker_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with pelletseg's tasks registered."""
    app = make_celery(settings, main="pelletseg-worker")

    @lru_cache(maxsize=1)
    def context() -> WorkerContext:
        return WorkerContext.from_settings(settings, lambda task, *args: send(app, task, *args))

    register_tasks(app, context)
    return app


app = make_worker_app(get_settings())
