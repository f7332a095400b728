"""Small timing helpers shared by the benchmark modules."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path


class TimedProxy:
    """Wraps an object (the job table, the blob store) and adds the time its methods spend,
    when called from the thread that created the proxy, to ``self.seconds`` (background
    threads such as the lease keeper overlap with the work and are not counted).

    Attributes:
        seconds: Time spent in the wrapped object's methods (s).
        calls: Number of timed calls.
    """

    def __init__(self, target):
        self._target = target
        self._thread = threading.get_ident()
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def timed(*args, **kwargs):
            if threading.get_ident() != self._thread:
                return attr(*args, **kwargs)
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        return timed


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """Peak resident memory (VmHWM) of a process in MiB; None where /proc is absent."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None
