"""Retries with backoff for the job table (tenacity).

A job-table call whose database connection was refused, dropped or timed out (PostgreSQL
restarting, a connection killed by ``pg_terminate_backend``, a failover, SQLite briefly
locked) is retried with exponential backoff and jitter for up to ``PELLETSEG_DB_RETRY_SECONDS``,
so workers and the API ride out a database restart instead of failing tasks and requests.
Errors that retrying cannot fix (constraint violations, bad SQL, a missing job) are raised at
once.

Every call of the job table is one short transaction of conditional UPDATEs, so running it
again is safe: a retried claim or completion that had in fact been committed finds the row
already moved and reports that (``claimed=False``, ``completed=False``) instead of counting
twice.
"""

from __future__ import annotations

import functools
import threading

import structlog
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

log = structlog.get_logger(__name__)

#: Retry budget of a job table built without settings (s).
DEFAULT_RETRY_SECONDS = 120.0
_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)
_state = threading.local()


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` (or an exception it was raised from) is a lost, refused or timed-out
    database connection, which retrying can fix."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _TRANSIENT):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _log_retry(state) -> None:
    log.warning("db.retry", call=getattr(state.fn, "__qualname__", "?"),
                attempt=state.attempt_number, error=str(state.outcome.exception())[:300],
                sleep_s=round(state.next_action.sleep, 2) if state.next_action else None)


def retrying(seconds: float) -> Retrying:
    """A tenacity policy: retry transient database errors with exponential backoff (0.2 s
    doubling to 5 s, plus up to 0.5 s of jitter) until ``seconds`` have passed, then re-raise
    the last error."""
    return Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.5),
        stop=stop_after_delay(seconds),
        before_sleep=_log_retry,
        reraise=True,
    )


def call_with_retries(fn, budget_s: float, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` under :func:`retrying` for ``budget_s`` seconds; calls nested
    inside a retried call are not retried again (the outer call owns the budget)."""
    if getattr(_state, "active", False) or budget_s <= 0:
        return fn(*args, **kwargs)
    _state.active = True
    try:
        return retrying(budget_s)(fn, *args, **kwargs)
    finally:
        _state.active = False


def with_retries(cls):
    """Class decorator: every public method of ``cls`` and of its bases retries transient
    database errors for ``self.retry_seconds`` (default :data:`DEFAULT_RETRY_SECONDS`)."""
    names = {
        name
        for klass in cls.__mro__
        if klass is not object
        for name, value in vars(klass).items()
        if not name.startswith("_") and callable(value) and not isinstance(value, type)
        and not isinstance(value, (staticmethod, classmethod, property))
    }
    for name in sorted(names):
        method = getattr(cls, name)
        if not getattr(method, "__wrapped_by_retries__", False):
            setattr(cls, name, _retried(method))
    return cls


def _retried(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        seconds = getattr(self, "retry_seconds", DEFAULT_RETRY_SECONDS)
        return call_with_retries(method, seconds, self, *args, **kwargs)

    wrapper.__wrapped_by_retries__ = True
    return wrapper
