"""The Celery application factory, shared by the API (which only sends tasks by name) and the
workers (which register them, :mod:`worker.tasks`). Imports no task code and no torch.

Delivery is at least once:
acks late, reject on worker lost, prefetch 1, publishing and consuming retried while the broker
is away, publishes confirmed by RabbitMQ (:func:`transport_options`); there is no result
backend, because job state lives in the job table. What happens to a message whose task fails
is decided by the task layer (``worker/deadletter.py``).
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from core.settings import Settings
from queues.embedded import embedded_transport
from queues.names import (
    QUEUE_OF_TASK,
    QUEUES,
    RECONCILE_TASK,
    amqp_queue_arguments,
    broker_kind,
    queue_name,
)

__all__ = ["celery_broker", "make_celery", "publish_retry_policy", "send", "task_queue",
           "task_queues", "transport_options"]


def task_queues(settings: Settings) -> list[Queue]:
    """The kombu queues workers consume (with their dead-letter arguments on RabbitMQ)."""
    amqp = broker_kind(settings.resolved_broker_url) == "amqp"
    queues = []
    for q in QUEUES:
        name = queue_name(settings, q)
        args = amqp_queue_arguments(settings, q) if amqp else None
        queues.append(Queue(name, routing_key=name, queue_arguments=args))
    return queues


def transport_options(settings: Settings) -> dict:
    """Broker transport options: Redis/SQS visibility timeout longer than a row lease; on Redis
    with a queue prefix, kombu's own keys (bindings, unacked messages) under that prefix too;
    on RabbitMQ publisher confirms (``confirm_publish``: a send returns once the broker has
    queued the message, and a message it refuses, e.g. over ``max_message_size`` or into a full
    queue, raises ``amqp.exceptions.MessageNacked`` in the sender instead of vanishing; one
    round trip per message); plus anything in ``PELLETSEG_BROKER_TRANSPORT_OPTIONS``, which
    overrides these.

    The embedded ``sqla+sqlite`` transport gets none: kombu passes its transport options
    straight to ``sqlalchemy.create_engine`` (its polling interval is set by
    :func:`embedded_transport` instead).
    """
    url = settings.resolved_broker_url
    kind = broker_kind(url)
    opts: dict = {}
    if kind in ("redis", "sqs"):
        opts["visibility_timeout"] = max(3600, 2 * settings.lease_seconds)
    if kind == "redis" and settings.queue_prefix:
        opts["global_keyprefix"] = settings.queue_prefix
    if kind == "amqp":
        opts["confirm_publish"] = True
    opts.update(settings.broker_transport_options)
    return opts


def publish_retry_policy(seconds: float) -> dict:
    """kombu retry policy for publishing: intervals 0.2, 0.7, 1.2 ... capped at 5 s, as many
    retries as fit in ``seconds``."""
    start, step, cap = 0.2, 0.5, 5.0
    retries, waited = 0, 0.0
    while waited < seconds:
        waited += min(cap, start + retries * step)
        retries += 1
    return {"max_retries": retries, "interval_start": start, "interval_step": step,
            "interval_max": cap}


def celery_broker(settings: Settings) -> tuple[str, type | None]:
    """Broker URL and transport class for Celery: the embedded ``sqla+<db-url>`` becomes
    ``<db-url>`` with :func:`embedded_transport` (a ``+`` prefix in the URL would override the
    transport); any other URL is used as it is, with kombu's transport for its scheme."""
    url = settings.resolved_broker_url
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("sqla+"):
        return url.split("+", 1)[1], embedded_transport(settings.embedded_poll_seconds)
    return url, None


def make_celery(settings: Settings, *, main: str = "pelletseg") -> Celery:
    """A Celery app bound to ``settings.resolved_broker_url`` with pelletseg's queues.

    The app has no tasks; ``worker.tasks`` registers them, and senders use
    :func:`send` with the task names above.
    """
    broker_url, transport = celery_broker(settings)
    app = Celery(main, broker=broker_url)
    if transport is not None:
        app.conf.broker_transport = transport
    default_queue = queue_name(settings, "rows")
    routes = {}
    for name, q in QUEUE_OF_TASK.items():
        routes[name] = {"queue": queue_name(settings, q), "routing_key": queue_name(settings, q)}
    app.conf.update(
        # At least once: a message is acknowledged after its task ran, a worker killed mid-task
        # leaves it to be redelivered, and a worker holds one message at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A task that raised is acknowledged; the tasks raise Reject where their message must
        # come back or go to its dead-letter queue (worker/deadletter.py).
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        result_backend=None,
        task_queues=task_queues(settings),
        task_default_queue=default_queue,
        task_routes=routes,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options(settings),
        # Broker away: workers reconnect for ever (with Celery's backoff) and keep running the
        # task in hand; senders retry for broker_retry_seconds.
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_publish_retry=True,
        task_publish_retry_policy=publish_retry_policy(settings.broker_retry_seconds),
        # Soft shutdown (Celery >= 5.5): on a cold shutdown the running task gets
        # soft_shutdown_seconds before its message is requeued. Not on idle: pelletseg sends
        # no ETA/countdown stage tasks, so an idle worker holds nothing worth waiting for.
        worker_soft_shutdown_timeout=float(settings.soft_shutdown_seconds),
        worker_enable_soft_shutdown_on_idle=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        broker_pool_limit=4,
        pelletseg_queue_prefix=settings.queue_prefix,
        # `celery -A worker.tasks beat` runs the reconciler (expired leases -> re-enqueued).
        beat_schedule={
            "pelletseg-reconcile": {
                "task": RECONCILE_TASK,
                "schedule": max(10.0, settings.lease_seconds / 4),
            }
        },
    )
    return app


def task_queue(app: Celery, task: str) -> str:
    """The broker queue ``task`` (one of the names above) is sent to by ``app`` (prefixed).

    Raises:
        KeyError: ``task`` is not one of pelletseg's tasks.
    """
    return app.conf.task_routes[task]["queue"]


def send(app: Celery, task: str, *args) -> None:
    """Enqueue ``task`` (one of the names above) with JSON ``args`` on its queue."""
    app.send_task(task, args=list(args), queue=task_queue(app, task))
