"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file under ``PELLETSEG_HOME``
(no server to run), made safe for several worker processes and polled often.

Why this transport: README, "Why the embedded broker is kombu's SQLAlchemy transport".
"""

from __future__ import annotations

from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy.exc import IntegrityError

__all__ = ["EmbeddedChannel", "embedded_transport"]


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
