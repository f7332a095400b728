"""The base of every job-table repository: an engine, its sessions and one transaction per
call (:func:`storage.jobtable.engine.session_scope`)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from storage.jobtable.engine import session_scope
from storage.jobtable.retries import DEFAULT_RETRY_SECONDS

__all__ = ["Repository"]


class Repository:
    """Operations on one concern of the job table, bound to one engine.

    Subclasses decorated with :func:`storage.jobtable.retries.with_retries` retry lost or
    refused connections for ``retry_seconds`` (s) on every public method.

    Raises (every method of a subclass):
        StorageError: the database failed or is unreachable (chained from SQLAlchemy's error).
    """

    def __init__(self, engine: Engine, retry_seconds: float = DEFAULT_RETRY_SECONDS):
        self.engine = engine
        self.retry_seconds = retry_seconds
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _tx(self):
        """One transaction (see :func:`storage.jobtable.engine.session_scope`)."""
        return session_scope(self._sessions, f"job table error ({self.engine.url!r})")
