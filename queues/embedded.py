"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file under ``PELLETSEG_HOME``
(no server to run), made safe for several worker processes, polled often, and quick to let a
worker shut down.

Why this transport: README, "Why the embedded broker is kombu's SQLAlchemy transport".
"""

from __future__ import annotations

from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy.exc import IntegrityError

__all__ = ["SHUTDOWN_CHECK_SECONDS", "EmbeddedChannel", "embedded_transport"]

#: Longest wait on an idle queue between two looks at the worker's shutdown flag (s).
SHUTDOWN_CHECK_SECONDS = 0.25


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
                 "drain_events": _drain_events, "__module__": __name__})


def _worker_stopping() -> bool:
    """Whether this process is a Celery worker told to shut down (warm or cold)."""
    from celery.worker import state

    # identity, as Celery's maybe_shutdown: a warm shutdown sets should_stop to EX_OK, i.e. 0
    return any(flag is not None and flag is not False
               for flag in (state.should_stop, state.should_terminate))


def _drain_events(self, connection, timeout=None):
    """kombu's virtual ``drain_events``, returning to the worker's loop at least every
    :data:`SHUTDOWN_CHECK_SECONDS` and at once while the worker shuts down.

    A transport without asynchronous I/O (this one) runs in Celery's blocking ``synloop``,
    which drains for 2 s, then checks the shutdown flag, and on shutdown drains once more
    (its ``finally``) before leaving: a warm shutdown of an idle worker took 3-4.6 s (measured
    2026-12-07), every ``pelletseg run`` paid it at its end, and that last drain could even
    start a new task after the signal. Here the drain gives way (``socket.timeout``, kombu's
    "nothing arrived") once the flag is set.
    """
    if _worker_stopping():
        raise TimeoutError  # socket.timeout, kombu's "nothing arrived"
    if timeout is not None:
        timeout = min(timeout, SHUTDOWN_CHECK_SECONDS)
    return kombu_sqlalchemy.Transport.drain_events(self, connection, timeout=timeout)
