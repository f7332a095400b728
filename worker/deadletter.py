"""At-least-once delivery with a bounded number of receives (docs/reliability.md).

The Celery tasks in ``worker.tasks`` run their stage through :meth:`DeliveryPolicy.run`, which
decides what becomes of the message:

- the stage finished (done, a duplicate, a skip, or a failure that is the input's fault and
  already failed the job): the message is acknowledged;
- the stage must run again (a row attempt raised and the job table put the row back to
  ``pending``; the job table or blob store stayed unreachable past its retries): the message
  is **redelivered** by the broker (``Reject(requeue=True)``), so each retry is one more
  receive of the same message and the broker counts them;
- the stage gave up (a row ``failed`` after ``max_attempts`` attempts, or a message received
  more than ``max_attempts`` times): the message is **dead-lettered** to its queue's DLQ.

How each broker counts receives and dead-letters (queues set up in ``queues/deadletters.py``):

========  ===========================  =======================================================
broker    receive number               dead-letter
========  ===========================  =======================================================
SQS       ``ApproximateReceiveCount``  redelivered until ``maxReceiveCount = max_attempts``;
                                       SQS then moves it to ``<queue>-dlq`` (redrive policy)
RabbitMQ  ``x-delivery-count`` + 1     ``Reject(requeue=False)``: the quorum queue routes it
                                       through ``<prefix>pelletseg.dlx`` to ``<queue>.dlq``;
                                       ``x-delivery-limit`` does the same for crash loops
Redis     pelletseg's counter          pelletseg publishes it to ``<queue>.dlq`` (with the
          (``INCR`` per receive)       reason and receive count in headers) and acks it
embedded  unknown                      as Redis
========  ===========================  =======================================================

So a row that always fails is received ``max_attempts`` times, fails its row and its job
with the row's reason, and ends in the dead-letter queue; ``pelletseg resume`` after fixing
the cause sends fresh messages. A worker that dies on a message (OOM, segfault) never acks
it; the broker redelivers it and counts that receive too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn, TypeVar

import structlog
from celery import Celery, Task
from celery.exceptions import Reject

from core.settings import Settings
from queues.deadletters import count_receive, forget_receives
from queues.names import QUEUE_OF_TASK, broker_kind, dead_letter_queue_name, queue_name
from storage.errors import StorageError

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Verdict(Enum):
    """What a stage's result means for its message."""

    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Outcome:
    """A stage result judged: the verdict and, for ``DEAD``, why."""

    verdict: Verdict
    reason: str = ""


def receive_number(kind: str, request) -> int | None:
    """Which receive of its message ``request`` (a Celery task request) is, where the broker
    says: SQS's ``ApproximateReceiveCount``, RabbitMQ quorum queues' ``x-delivery-count`` + 1;
    None elsewhere (Redis is counted by :meth:`DeliveryPolicy.receive`)."""
    if kind == "sqs":
        info = (getattr(request, "properties", None) or {}).get("delivery_info") or {}
        count = ((info.get("sqs_message") or {}).get("Attributes") or {}).get(
            "ApproximateReceiveCount")
        return int(count) if count is not None else None
    if kind == "amqp":
        count = vars(request).get("x-delivery-count")
        return int(count) + 1 if count is not None else 1
    return None


class DeliveryPolicy:
    """The at-least-once policy of one worker app's broker (see the module docstring).

    Args:
        app: The worker's Celery app (used to publish dead letters on Redis/embedded).
        settings: Gives the broker URL, queue prefix and ``max_attempts`` (the receive bound).
    """

    def __init__(self, app: Celery, settings: Settings):
        self.app, self.settings = app, settings
        self.kind = broker_kind(settings.resolved_broker_url)
        self.max_receives = max(1, settings.max_attempts)

    def receive(self, task: Task) -> int | None:
        """Count this receive of ``task``'s message and return its number (None where the
        broker gives no count: the embedded broker).

        Raises:
            StorageError: Redis is unreachable (the message comes back when it is).
        """
        if self.kind == "redis":
            return count_receive(self.settings, task.request.id)
        return receive_number(self.kind, task.request)

    def run(
        self,
        task: Task,
        stage: Callable[[], T],
        judge: Callable[[T], Outcome],
        give_up: Callable[[str], None] | None = None,
    ) -> T | None:
        """Run ``stage()`` for ``task``'s message and settle the message by ``judge(result)``.

        ``give_up(reason)`` is called when the message goes to the dead-letter queue without
        the stage having recorded the failure itself (too many receives; the stage's
        infrastructure still failing on the last receive), e.g. to fail the job.

        Returns:
            The stage's result (None when the message was dead-lettered before running).

        Raises:
            Reject: the message must be redelivered or dead-lettered by the broker (Celery
                handles it; the task is not marked failed).
        """
        receives = self.receive(task)
        if receives is not None and receives > self.max_receives:
            reason = (f"{task.name}{tuple(task.request.args or ())} was received {receives} "
                      f"times without finishing (its worker died or its task kept failing)")
            self._give_up(give_up, reason)
            self.dead_letter(task, reason, receives)
            return None
        try:
            result = stage()
        except StorageError as e:
            last = receives is not None and receives >= self.max_receives
            if last:
                self._give_up(give_up, f"{task.name}: {e}")
            log.warning("delivery.storage_error", task=task.name, args=task.request.args,
                        receives=receives, error=str(e))
            if last:
                self.dead_letter(task, str(e), receives)
                return None
            self.redeliver(task, str(e))
        outcome = judge(result)
        if outcome.verdict == Verdict.RETRY:
            self.redeliver(task, outcome.reason)
        if outcome.verdict == Verdict.DEAD:
            self.dead_letter(task, outcome.reason, receives)
            return result
        self.settle(task)
        return result

    def redeliver(self, task: Task, reason: str) -> NoReturn:
        """Have the broker deliver ``task``'s message again (one more receive): SQS makes it
        visible again after kombu's ``wait_time_seconds``; Redis, RabbitMQ and the embedded
        broker put it back in the queue at once.

        Raises:
            Reject: always (``requeue=True``).
        """
        raise Reject(reason or "redeliver", requeue=True)

    def dead_letter(self, task: Task, reason: str, receives: int | None) -> None:
        """Send ``task``'s message to its dead-letter queue.

        Raises:
            Reject: on SQS (``requeue=True``: SQS moves it once it has been received
                ``max_attempts`` times) and RabbitMQ (``requeue=False``: the queue's
                dead-letter exchange takes it). On Redis and the embedded broker a copy goes to
                ``<queue>.dlq`` and the message is acknowledged normally.
        """
        log.error("delivery.dead_letter", task=task.name, args=task.request.args,
                  receives=receives, reason=reason[:500])
        if self.kind == "sqs":
            raise Reject(reason, requeue=True)
        if self.kind == "amqp":
            raise Reject(reason, requeue=False)
        logical = QUEUE_OF_TASK.get(task.name, "rows")
        source = queue_name(self.settings, logical)
        self.app.send_task(
            task.name, args=list(task.request.args or ()), kwargs=task.request.kwargs or {},
            task_id=task.request.id, queue=dead_letter_queue_name(self.settings, logical),
            headers={"x-pelletseg-reason": reason[:2000], "x-pelletseg-receives": receives,
                     "x-pelletseg-source-queue": source},
        )
        self.settle(task)

    def settle(self, task: Task) -> None:
        """The message is done with: drop its Redis receive counter."""
        if self.kind == "redis":
            forget_receives(self.settings, task.request.id)

    @staticmethod
    def _give_up(give_up: Callable[[str], None] | None, reason: str) -> None:
        if give_up is None:
            return
        try:
            give_up(reason)
        except StorageError as e:  # the job table is still away: the message is parked anyway
            log.warning("delivery.give_up_failed", reason=reason[:300], error=str(e))


# ---------------------------------------------------------------- judges of stage results
def judge_row(outcome: str, reason: Callable[[], str]) -> Outcome:
    """``segment_row``'s result: ``retry`` -> redeliver; ``failed`` (this attempt failed the
    row) or ``skipped:failed`` (the row had already failed) -> dead-letter with the row's
    error (``reason()``); anything else -> ack."""
    if outcome == "retry":
        return Outcome(Verdict.RETRY, "row attempt failed; the row is pending again")
    if outcome in ("failed", "skipped:failed"):
        return Outcome(Verdict.DEAD, reason())
    return Outcome(Verdict.ACK)


def judge_done(_result) -> Outcome:
    """Planner and reducer: a result means the stage ran (input errors fail the job inside
    the stage): ack."""
    return Outcome(Verdict.ACK)
