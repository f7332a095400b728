"""Dead-letter queues and queue housekeeping per broker (see docs/reliability.md).

Every queue (``plan``, ``rows``, ``reduce``, with ``PELLETSEG_QUEUE_PREFIX`` in front) has a
dead-letter queue that receives a message once it has been received ``max_attempts`` times
without finishing, or once the task layer gave up on it:

========  =================================================================================
SQS       native: each queue has a redrive policy (``maxReceiveCount = max_attempts``) to
          ``<queue>-dlq`` (SQS names allow no dot). :func:`create_sqs_queues` creates both and
          returns kombu's ``predefined_queues`` (terraform does the same in production).
RabbitMQ  native: quorum queues (the only type that counts deliveries) with
          ``x-delivery-limit = max_attempts - 1`` and a dead-letter exchange
          ``<prefix>pelletseg.dlx`` routing to ``<queue>.dlq``
          (:func:`queues.names.amqp_queue_arguments`, :func:`declare_dead_letter_queues`).
Redis     none natively: pelletseg counts receives per message in Redis
          (:func:`count_receive`) and moves a message to the list ``<queue>.dlq`` itself.
embedded  no receive counter (the SQLAlchemy transport loses a dead worker's message anyway);
          the task layer still moves given-up messages to ``<queue>.dlq``.
========  =================================================================================

This module is storage-side plumbing (boto3, kombu, redis-py); which message goes where is
decided in ``worker/deadletter.py``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from functools import lru_cache

from kombu import Connection, Exchange, Queue

from core.settings import Settings
from queues.app import task_queues, transport_options
from queues.names import (
    QUEUES,
    broker_kind,
    dead_letter_exchange,
    dead_letter_queue_name,
    queue_name,
)
from storage.errors import StorageError

#: SQS keeps dead letters for its maximum, 14 days, so that operators can look at them.
SQS_DLQ_RETENTION_SECONDS = 14 * 24 * 3600
#: Redis receive counters expire after this long (a message is long gone by then).
RECEIVE_COUNTER_TTL_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class DeadLetter:
    """One message found in a dead-letter queue.

    Attributes:
        task: Task name (e.g. ``pelletseg.segment_row``).
        args: The task's positional arguments (e.g. ``[job_id, row]``).
        message_id: Celery task id (the same on every delivery of the message).
        reason: Why it was dead-lettered, where the broker says (RabbitMQ ``x-death``,
            pelletseg's own header on Redis and the embedded broker); None on SQS.
        receives: How many times the source queue delivered it, where known (Redis: pelletseg's
            counter; SQS: the message's receive count, which reading it here adds to; None on
            RabbitMQ and the embedded broker).
    """

    task: str
    args: list
    message_id: str
    reason: str | None
    receives: int | None


# ------------------------------------------------------------------------------------ SQS
def sqs_dlq_name(settings: Settings, logical: str) -> str:
    """SQS name of the dead-letter queue of ``logical``: ``<prefix><queue>-dlq``."""
    return queue_name(settings, logical) + "-dlq"


def sqs_queue_attributes(settings: Settings, dlq_arn: str) -> dict[str, str]:
    """Attributes of a pelletseg SQS queue: the visibility timeout kombu uses (longer than a
    row lease) and a redrive policy to ``dlq_arn`` after ``max_attempts`` receives."""
    return {
        "VisibilityTimeout": str(transport_options(settings).get("visibility_timeout", 3600)),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_attempts)}
        ),
    }


def create_sqs_queues(settings: Settings, client=None) -> dict[str, dict]:
    """Create (or update) each queue and its dead-letter queue on SQS; idempotent.

    Args:
        settings: Gives the queue prefix, ``max_attempts`` and lease.
        client: A boto3 SQS client (default: ``boto3.client("sqs")`` from the environment).

    Returns:
        kombu's ``predefined_queues`` transport option, ``{queue name: {"url": ...}}``, to put
        in ``PELLETSEG_BROKER_TRANSPORT_OPTIONS`` (with ``region``).

    Raises:
        StorageError: SQS refused a call (credentials, permissions, endpoint).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or _sqs_client()
    predefined: dict[str, dict] = {}
    try:
        for q in QUEUES:
            dlq_url = client.create_queue(
                QueueName=sqs_dlq_name(settings, q),
                Attributes={"MessageRetentionPeriod": str(SQS_DLQ_RETENTION_SECONDS)},
            )["QueueUrl"]
            dlq_arn = client.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            url = client.create_queue(QueueName=queue_name(settings, q))["QueueUrl"]
            client.set_queue_attributes(
                QueueUrl=url, Attributes=sqs_queue_attributes(settings, dlq_arn)
            )
            predefined[queue_name(settings, q)] = {"url": url}
    except (BotoCoreError, ClientError) as e:
        raise StorageError(f"cannot create the SQS queues of prefix "
                           f"{settings.queue_prefix!r}: {e}") from e
    return predefined


def sqs_dlq_url(settings: Settings, logical: str, client=None) -> str:
    """URL of the SQS dead-letter queue of ``logical``.

    Raises:
        StorageError: it does not exist or SQS refused the call.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or _sqs_client()
    try:
        return client.get_queue_url(QueueName=sqs_dlq_name(settings, logical))["QueueUrl"]
    except (BotoCoreError, ClientError) as e:
        raise StorageError(f"no SQS dead-letter queue {sqs_dlq_name(settings, logical)}: "
                           f"{e}") from e


def _sqs_client():
    import boto3

    return boto3.client("sqs")


def _sqs_dead_letter(message: dict) -> DeadLetter:
    """Decode a kombu message received straight from SQS."""
    text = message["Body"]
    try:
        envelope = json.loads(text)
    except ValueError:
        envelope = json.loads(base64.b64decode(text))
    receives = message.get("Attributes", {}).get("ApproximateReceiveCount")
    return _decode_envelope(envelope, None, int(receives) if receives else None)


def _decode_envelope(envelope: dict, reason: str | None, receives: int | None) -> DeadLetter:
    headers = envelope.get("headers") or {}
    body = envelope.get("body")
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    payload = json.loads(body) if isinstance(body, (str, bytes)) else body
    return DeadLetter(task=headers.get("task", ""), args=list(payload[0]),
                      message_id=headers.get("id", ""), reason=reason, receives=receives)


# ------------------------------------------------------------------------------- RabbitMQ
def amqp_dead_letter_queues(settings: Settings) -> list[Queue]:
    """The dead-letter exchange's queues ``<queue>.dlq``: durable classic queues (a quorum
    queue would count the deliveries of operators looking at its messages, and RabbitMQ 4
    drops a quorum message after 20 of those by default)."""
    dlx = Exchange(dead_letter_exchange(settings), type="direct", durable=True)
    return [
        Queue(dead_letter_queue_name(settings, q), dlx,
              routing_key=dead_letter_queue_name(settings, q), durable=True,
              queue_arguments={"x-queue-type": "classic"})
        for q in QUEUES
    ]


def declare_dead_letter_queues(settings: Settings) -> None:
    """RabbitMQ: declare the dead-letter exchange and ``<queue>.dlq`` queues (workers do this
    when they start: RabbitMQ drops a dead letter whose exchange does not exist). Idempotent;
    a no-op on other brokers.

    Raises:
        StorageError: the broker is unreachable or refused a declaration (e.g. a queue of the
            same name exists with other arguments: PRECONDITION_FAILED).
    """
    if broker_kind(settings.resolved_broker_url) != "amqp":
        return
    with _connection(settings) as conn:
        try:
            channel = conn.channel()
            for queue in amqp_dead_letter_queues(settings):
                queue(channel).declare()
        except (*conn.connection_errors, *conn.channel_errors) as e:
            raise StorageError(f"cannot declare the dead-letter queues of prefix "
                               f"{settings.queue_prefix!r}: {e}") from e


# ---------------------------------------------------------------------------------- Redis
@lru_cache(maxsize=8)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def receive_counter_key(settings: Settings, message_id: str) -> str:
    """Redis key counting the receives of one message."""
    return f"{settings.queue_prefix}pelletseg.receives.{message_id}"


def count_receive(settings: Settings, message_id: str) -> int:
    """Redis: count one more receive of message ``message_id``; returns the count (1 on the
    first receive). The counter expires after 14 days.

    Raises:
        StorageError: Redis is unreachable.
    """
    import redis

    key = receive_counter_key(settings, message_id)
    try:
        pipe = _redis(settings.resolved_broker_url).pipeline()
        pipe.incr(key)
        pipe.expire(key, RECEIVE_COUNTER_TTL_SECONDS)
        return int(pipe.execute()[0])
    except redis.RedisError as e:
        raise StorageError(f"cannot count a receive in Redis: {e}") from e


def forget_receives(settings: Settings, message_id: str) -> None:
    """Redis: drop the receive counter of a message that is done with (errors ignored: the
    counter expires anyway)."""
    import redis

    try:
        _redis(settings.resolved_broker_url).delete(receive_counter_key(settings, message_id))
    except redis.RedisError:
        pass


# ---------------------------------------------------------------------------- any broker
def dead_letters(settings: Settings, logical: str, *, remove: bool = False,
                 limit: int = 100) -> list[DeadLetter]:
    """The messages in the dead-letter queue of ``logical`` (up to ``limit``), oldest first.

    With ``remove`` they are taken out of it (e.g. to redrive them); otherwise they stay
    (SQS: received with visibility timeout 0; others: put back).

    Raises:
        StorageError: the broker is unreachable or the dead-letter queue does not exist.
    """
    kind = broker_kind(settings.resolved_broker_url)
    if kind == "sqs":
        return _sqs_dead_letters(settings, logical, remove=remove, limit=limit)
    found: list[DeadLetter] = []
    with _connection(settings) as conn:
        try:
            channel = conn.channel()
            name = dead_letter_queue_name(settings, logical)
            queue = (amqp_dead_letter_queues(settings)[QUEUES.index(logical)]
                     if kind == "amqp" else Queue(name, Exchange(name), routing_key=name))
            bound = queue(channel)
            held = []
            while len(found) < limit:
                message = bound.get(no_ack=False, accept=["json"])
                if message is None:
                    break
                held.append(message)
                found.append(_kombu_dead_letter(message))
            for message in held:
                if remove:
                    message.ack()
                else:
                    message.reject(requeue=True)
        except (*conn.connection_errors, *conn.channel_errors) as e:
            raise StorageError(f"cannot read dead-letter queue of {logical!r}: {e}") from e
    return found


def _kombu_dead_letter(message) -> DeadLetter:
    headers = message.headers or {}
    reason = headers.get("x-pelletseg-reason")
    deaths = headers.get("x-death") or []
    if reason is None and deaths:
        reason = deaths[0].get("reason")
    receives = headers.get("x-pelletseg-receives")  # RabbitMQ keeps no count of the source
    args, _kwargs, _embed = message.decode()
    return DeadLetter(task=headers.get("task", ""), args=list(args),
                      message_id=headers.get("id", ""), reason=reason,
                      receives=int(receives) if receives is not None else None)


def _sqs_dead_letters(settings, logical, *, remove, limit) -> list[DeadLetter]:
    from botocore.exceptions import BotoCoreError, ClientError

    client = _sqs_client()
    url = sqs_dlq_url(settings, logical, client)
    found: list[DeadLetter] = []
    seen: set[str] = set()
    try:
        while len(found) < limit:
            resp = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=min(10, limit - len(found)),
                AttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=0,
                VisibilityTimeout=30 if remove else 0,
            )
            batch = [m for m in resp.get("Messages", []) if m["MessageId"] not in seen]
            if not batch:
                break
            for m in batch:
                seen.add(m["MessageId"])
                found.append(_sqs_dead_letter(m))
                if remove:
                    client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    except (BotoCoreError, ClientError, ValueError, binascii.Error) as e:
        raise StorageError(f"cannot read SQS dead-letter queue {url}: {e}") from e
    return found


def delete_queues(settings: Settings) -> None:
    """Delete this prefix's queues, dead-letter queues and broker keys (tests, or retiring a
    deployment). SQS: the queues; RabbitMQ: queues and exchanges; Redis: every key under the
    prefix (refused without a prefix: the keys could be anyone's); embedded: nothing (its
    file lives under ``home``).

    Raises:
        StorageError: the broker is unreachable, or Redis without a prefix.
    """
    kind = broker_kind(settings.resolved_broker_url)
    if kind == "sqs":
        from botocore.exceptions import BotoCoreError, ClientError

        client = _sqs_client()
        for q in QUEUES:
            for name in (queue_name(settings, q), sqs_dlq_name(settings, q)):
                try:
                    url = client.get_queue_url(QueueName=name)["QueueUrl"]
                    client.delete_queue(QueueUrl=url)
                except client.exceptions.QueueDoesNotExist:
                    continue
                except (BotoCoreError, ClientError) as e:
                    raise StorageError(f"cannot delete SQS queue {name}: {e}") from e
    elif kind == "redis":
        import redis

        if not settings.queue_prefix:
            raise StorageError("refusing to delete Redis keys without PELLETSEG_QUEUE_PREFIX")
        try:
            client = _redis(settings.resolved_broker_url)
            keys = list(client.scan_iter(match=f"{settings.queue_prefix}*", count=500))
            if keys:
                client.delete(*keys)
        except redis.RedisError as e:
            raise StorageError(f"cannot delete Redis keys: {e}") from e
    elif kind == "amqp":
        with _connection(settings) as conn:
            try:
                channel = conn.channel()
                exchanges = {dead_letter_exchange(settings)}
                for queue in [*task_queues(settings), *amqp_dead_letter_queues(settings)]:
                    channel.queue_delete(queue.name)
                    exchanges.add(queue.name)  # Celery's default exchange is named by a queue
                for name in exchanges:
                    channel.exchange_delete(name)
            except (*conn.connection_errors, *conn.channel_errors) as e:
                raise StorageError(f"cannot delete RabbitMQ queues: {e}") from e


def _connection(settings: Settings) -> Connection:
    return Connection(settings.resolved_broker_url,
                      transport_options=transport_options(settings), connect_timeout=10)
