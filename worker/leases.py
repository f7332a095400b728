"""Lease renewal while a leased piece of work runs (a row, a job's streaming stitch)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Self

import structlog

from storage.errors import StorageError

log = structlog.get_logger(__name__)


class Renewal:
    """Context manager: calls ``renew()`` every ``interval`` seconds from a daemon thread while
    the block runs, so only a dead worker's lease expires.

    ``renew()`` returns True if the lease was pushed, False if it was lost (taken over after it
    expired, or released). A failed renewal (job table briefly unreachable,
    :class:`StorageError`) is logged and retried at the next tick.

    Attributes:
        renewals: Successful renewals so far.
        lost: Set once a renewal found the lease gone.
    """

    def __init__(self, renew: Callable[[], bool], interval: float, what: str, **log_fields):
        self.renew, self.interval, self.what, self.log_fields = renew, interval, what, log_fields
        self.renewals = 0
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{what}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.renew():
                    self.renewals += 1
                else:
                    self.lost.set()
            except StorageError as e:
                log.warning("lease.renew_failed", what=self.what, error=str(e), **self.log_fields)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class RowsInFlight:
    """The rows this worker process is working on now (process-wide, thread-safe).

    A row enters before it is claimed and leaves once its outcome is in the job table (done,
    failed, handed back) or its task stopped. The heartbeat (``worker/liveness.py``) renews
    the leases of these rows only and hands back any other row the table says this process
    holds: one whose task stopped without recording an outcome (e.g. the job table dropped
    the connection at ``complete``) goes back to ``pending`` within one beat instead of
    staying leased to a live worker for ever.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, int], int] = {}

    @contextmanager
    def hold(self, job_id: str, index: int) -> Iterator[None]:
        """Context manager: ``(job_id, index)`` is in flight while the block runs (counted, so
        two threads of one process on the same row keep it in flight until both leave)."""
        key = (job_id, index)
        with self._lock:
            self._rows[key] = self._rows.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._rows[key] -= 1
                if not self._rows[key]:
                    del self._rows[key]

    def snapshot(self) -> tuple[frozenset[tuple[str, int]], datetime]:
        """The rows in flight and the UTC time of the snapshot: a row claimed after that time
        entered after the snapshot was taken (``hold`` comes before the claim), so only rows
        claimed before it may be judged "held but not in flight"."""
        with self._lock:
            return frozenset(self._rows), datetime.now(UTC)


#: This process's rows in flight (one worker id per process: ``host:pid``).
ROWS_IN_FLIGHT = RowsInFlight()
