"""How many messages wait in a queue, on every broker (the API's metrics, the workers'
stalled-consumer watch, ``worker/liveness.py``, and the reconciler's test for lost messages)."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from core.settings import Settings
from queues.names import queue_name

log = structlog.get_logger(__name__)

__all__ = ["BROKER_TIMEOUT_S", "depth_reader", "queue_depths"]

BROKER_TIMEOUT_S = 3.0


def queue_depths(celery, queues: dict[str, str],
                 timeout: float = BROKER_TIMEOUT_S) -> dict[str, int]:
    """Messages waiting in each queue: ``{logical name: count}`` for ``queues`` (logical
    name -> the broker's name, with ``PELLETSEG_QUEUE_PREFIX``); a passive declare per queue,
    a queue the broker does not know yet counts 0.

    Raises:
        Exception: the broker is unreachable (kombu's or the transport's error).
    """
    depths: dict[str, int] = {}
    with celery.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        for logical, name in queues.items():
            channel = conn.channel()
            try:
                if hasattr(channel, "_size"):  # kombu's virtual transports: Redis, SQS, SQLA
                    depths[logical] = int(channel._size(name))
                else:  # AMQP: the declare-ok frame carries the count
                    depths[logical] = int(channel.queue_declare(queue=name, passive=True)
                                          .message_count)
            except conn.channel_errors:
                depths[logical] = 0  # never declared: nothing was ever sent to it
            finally:
                try:
                    channel.close()
                except Exception as e:
                    log.debug("metrics.channel_close", error=str(e))
    return depths


def depth_reader(celery, settings: Settings) -> Callable[[str], int]:
    """``depth(logical)``: messages waiting in the logical queue ``logical`` (``plan``,
    ``rows``, ``reduce``, named with ``settings``' prefix) on ``celery``'s broker, read by
    :func:`queue_depths` at each call: messages received by a worker (in flight, or hidden
    by SQS's visibility timeout or Redis's unacked set) are not counted. The reconciler's
    test for lost messages (``worker/stages/reconciling.py``).

    Raises:
        Exception: the broker is unreachable (from :func:`queue_depths`).
    """
    def depth(logical: str) -> int:
        return queue_depths(celery, {logical: queue_name(settings, logical)})[logical]

    return depth
