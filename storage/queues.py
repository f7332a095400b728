"""Celery application factory and queue layout, shared by the API (which only sends tasks by
name) and the workers (which register them). Imports no task code and no torch.

Queues: ``plan`` (CPU), ``rows`` (GPU), ``reduce`` (CPU). Delivery is at least once:
acks late, reject on worker lost, prefetch 1; there is no result backend, because job state
lives in the job table.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from storage.settings import Settings

PLAN_TASK = "pelletseg.plan_job"
ROW_TASK = "pelletseg.segment_row"
REDUCE_TASK = "pelletseg.reduce_job"
RECONCILE_TASK = "pelletseg.reconcile"

QUEUE_OF_TASK = {
    PLAN_TASK: "plan", ROW_TASK: "rows", REDUCE_TASK: "reduce", RECONCILE_TASK: "plan",
}
QUEUES = ("plan", "rows", "reduce")


def transport_options(settings: Settings) -> dict:
    """Broker transport options: Redis/SQS visibility timeout longer than a row lease, plus
    anything in ``PELLETSEG_BROKER_TRANSPORT_OPTIONS``.

    The embedded ``sqla+sqlite`` transport gets none: kombu passes its transport options
    straight to ``sqlalchemy.create_engine``, so it polls at kombu's default 1 s.
    """
    url = settings.resolved_broker_url
    opts: dict = {}
    if url.startswith(("redis", "sqs")):
        opts["visibility_timeout"] = max(3600, 2 * settings.lease_seconds)
    opts.update(settings.broker_transport_options)
    return opts


def make_celery(settings: Settings, *, main: str = "pelletseg") -> Celery:
    """A Celery app bound to ``settings.resolved_broker_url`` with pelletseg's queues.

    The app has no tasks; ``worker.tasks`` registers them, and senders use
    :func:`send` with the task names above.
    """
    app = Celery(main, broker=settings.resolved_broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_default_queue="rows",
        task_routes={name: {"queue": q, "routing_key": q} for name, q in QUEUE_OF_TASK.items()},
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        broker_pool_limit=4,
        # `celery -A worker.tasks beat` runs the reconciler (expired leases -> re-enqueued).
        beat_schedule={
            "pelletseg-reconcile": {
                "task": RECONCILE_TASK,
                "schedule": max(10.0, settings.lease_seconds / 4),
            }
        },
    )
    return app


def send(app: Celery, task: str, *args) -> None:
    """Enqueue ``task`` (one of the names above) with JSON ``args`` on its queue."""
    app.send_task(task, args=list(args), queue=QUEUE_OF_TASK[task])
