"""The task queue: task and queue names (:mod:`queues.names`), the Celery app factory and
``send`` (:mod:`queues.app`), the embedded SQLite broker (:mod:`queues.embedded`) and the
dead-letter queues of each broker, SQS, RabbitMQ, Redis and embedded
(:mod:`queues.deadletters`), and how many messages wait in a queue (:mod:`queues.depths`).
The API sends tasks by name through it; the workers register
them (:mod:`worker.tasks`). Which message goes where after a failure is the worker's
decision (:mod:`worker.deadletter`).

May import: ``core``, ``storage.errors`` (a broker it cannot reach raises ``StorageError``),
Celery, kombu, boto3, redis-py; never the rest of ``storage``, nor ``worker``, ``api``
or torch.
"""

from queues.app import make_celery, send, task_queue
from queues.names import (
    NOTIFY_TASK,
    PLAN_TASK,
    QUEUE_OF_TASK,
    QUEUES,
    RECONCILE_TASK,
    REDUCE_TASK,
    ROW_TASK,
    STITCH_TASK,
    broker_kind,
    dead_letter_queue_name,
    queue_name,
)

__all__ = [
    "NOTIFY_TASK",
    "PLAN_TASK",
    "QUEUES",
    "QUEUE_OF_TASK",
    "RECONCILE_TASK",
    "REDUCE_TASK",
    "ROW_TASK",
    "STITCH_TASK",
    "broker_kind",
    "dead_letter_queue_name",
    "make_celery",
    "queue_name",
    "send",
    "task_queue",
]
