"""Lease renewal while a leased piece of work runs (a row, a job's streaming stitch)."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
