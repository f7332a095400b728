"""Names of pelletseg's tasks and queues, and the broker families: shared by everything that
sends a task (the API, the CLI) and everything that runs one (the workers), with no Celery
import.

Queues: ``plan`` (CPU), ``rows`` (GPU), ``reduce`` (CPU), each named with
``PELLETSEG_QUEUE_PREFIX`` in front (default empty) and each with a dead-letter queue
``<queue>.dlq`` (SQS: ``<queue>-dlq``, see :mod:`queues.deadletters`).
"""

from __future__ import annotations

from typing import Literal

from core.settings import Settings

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "NOTIFY_TASK",
    "PLAN_TASK",
    "QUEUES",
    "QUEUE_OF_TASK",
    "RECONCILE_TASK",
    "REDUCE_TASK",
    "ROW_TASK",
    "STITCH_TASK",
    "BrokerKind",
    "amqp_queue_arguments",
    "broker_kind",
    "dead_letter_exchange",
    "dead_letter_queue_name",
    "queue_name",
]

PLAN_TASK = "pelletseg.plan_job"
ROW_TASK = "pelletseg.segment_row"
REDUCE_TASK = "pelletseg.reduce_job"
RECONCILE_TASK = "pelletseg.reconcile"
NOTIFY_TASK = "pelletseg.notify"  # end-of-job webhook delivery (worker/stages/notifying.py)
STITCH_TASK = "pelletseg.stitch"  # streaming stitcher, with PELLETSEG_STREAM_REDUCE (worker/stages/streaming.py)

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
    (``<prefix><queue>.dlq``; SQS names allow no dot, see :func:`queues.deadletters.sqs_dlq_name`)."""
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
