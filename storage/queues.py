"""Celery application factory and queue layout, shared by the API (which only sends tasks by
name) and the workers (which register them). Imports no task code and no torch.

Queues: ``plan`` (CPU), ``rows`` (GPU), ``reduce`` (CPU), each named with
``PELLETSEG_QUEUE_PREFIX`` in front (default empty) and each with a dead-letter queue
``<queue>.dlq`` (SQS: ``<queue>-dlq``, see :mod:`storage.brokers`). Delivery is at least once:
acks late, reject on worker lost, prefetch 1, publishing and consuming retried while the broker
is away; there is no result backend, because job state lives in the job table. What happens to
a message whose task fails is decided by the task layer (``worker/deadletter.py``).
"""

from __future__ import annotations

from typing import Literal

from celery import Celery
from kombu import Queue
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy.exc import IntegrityError

from storage.settings import Settings

PLAN_TASK = "pelletseg.plan_job"
ROW_TASK = "pelletseg.segment_row"
REDUCE_TASK = "pelletseg.reduce_job"
RECONCILE_TASK = "pelletseg.reconcile"
NOTIFY_TASK = "pelletseg.notify"  # end-of-job webhook delivery (worker/notifying.py)
STITCH_TASK = "pelletseg.stitch"  # streaming stitcher, with PELLETSEG_STREAM_REDUCE (worker/streaming.py)

#: The logical queue of each task; :func:`queue_name` gives the broker's name for it.
QUEUE_OF_TASK = {
    PLAN_TASK: "plan", ROW_TASK: "rows", REDUCE_TASK: "reduce", RECONCILE_TASK: "plan",
    NOTIFY_TASK: "plan", STITCH_TASK: "reduce",
}
#: Logical queue names.
QUEUES = ("plan", "rows", "reduce")
DEAD_LETTER_SUFFIX = ".dlq"

BrokerKind = Literal["embedded", "redis", "amqp", "sqs", "other"]


def broker_kind(url: str) -> BrokerKind:
    """Which family a broker URL belongs to: ``embedded`` (kombu's SQLAlchemy transport),
    ``redis``, ``amqp`` (RabbitMQ), ``sqs`` or ``other``."""
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("sqla+") or scheme in ("sqlalchemy", "sqla"):
        return "embedded"
    if scheme in ("redis", "rediss", "redis+socket", "sentinel"):
        return "redis"
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    if scheme == "sqs":
        return "sqs"
    return "other"


def queue_name(settings: Settings, logical: str) -> str:
    """The broker's name of logical queue ``logical`` (``plan``, ``rows``, ``reduce``):
    ``PELLETSEG_QUEUE_PREFIX`` + ``logical``."""
    return f"{settings.queue_prefix}{logical}"


def dead_letter_queue_name(settings: Settings, logical: str) -> str:
    """Name of the dead-letter queue of ``logical`` on Redis, RabbitMQ and the embedded broker
    (``<prefix><queue>.dlq``; SQS names allow no dot, see :func:`storage.brokers.sqs_dlq_name`)."""
    return queue_name(settings, logical) + DEAD_LETTER_SUFFIX


def dead_letter_exchange(settings: Settings) -> str:
    """RabbitMQ: the direct exchange dead-lettered messages go through to ``<queue>.dlq``."""
    return f"{settings.queue_prefix}pelletseg.dlx"


def amqp_queue_arguments(settings: Settings, logical: str) -> dict:
    """RabbitMQ arguments of queue ``logical``: a quorum queue (the only type that counts
    deliveries) whose message is dead-lettered to ``<queue>.dlq`` once it has been delivered
    ``max_attempts`` times (``x-delivery-limit`` counts the returns after the first delivery)
    or is rejected without requeue."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": max(0, settings.max_attempts - 1),
        "x-dead-letter-exchange": dead_letter_exchange(settings),
        "x-dead-letter-routing-key": dead_letter_queue_name(settings, logical),
    }


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
    plus anything in ``PELLETSEG_BROKER_TRANSPORT_OPTIONS``.

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


class EmbeddedChannel(kombu_sqlalchemy.Channel):
    """kombu's SQLAlchemy channel, safe when several processes create a queue at once.

    kombu creates a queue's row on first use with a check, then an INSERT, guarded by a lock
    of its own process only: two workers starting together on a fresh broker file both miss
    the row, and the second INSERT fails on ``kombu_queue.name``'s unique constraint, which
    kombu does not catch, so that worker dies at start (seen in 4 of 6 starts of two local
    workers, 2026-11-30). Here the loser rolls back and reads the winner's row.
    """

    def _get_or_create(self, queue):
        try:
            return super()._get_or_create(queue)
        except IntegrityError:  # another process created the queue between check and insert
            self.session.rollback()
            return super()._get_or_create(queue)


def embedded_transport(poll_seconds: float) -> type[kombu_sqlalchemy.Transport]:
    """kombu's SQLAlchemy transport polling an idle queue every ``poll_seconds`` (s), with
    :class:`EmbeddedChannel`.

    kombu reads a virtual transport's polling interval from its transport options, but its
    SQLAlchemy transport hands every option to ``sqlalchemy.create_engine``, which rejects
    ``polling_interval``: so the interval is set on a subclass instead.
    """
    return type("EmbeddedTransport", (kombu_sqlalchemy.Transport,),
                {"polling_interval": float(poll_seconds), "Channel": EmbeddedChannel,
                 "__module__": __name__})


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
