"""Small timing helpers shared by the benchmark modules."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path


class TimedProxy:
    """Wraps an object (the job table, the blob store) and adds the time its methods spend,
    when called from the thread that created the proxy, to ``self.seconds`` (background
    threads such as the lease keeper overlap with the work and are not counted). Methods of
    its attributes are timed too (``table.rows.claim(...)``), into the same totals.

    Attributes:
        seconds: Time spent in the wrapped object's methods (s).
        calls: Number of timed calls.
    """

    def __init__(self, target, _root: TimedProxy | None = None):
        self._target = target
        self._root = _root or self
        self._thread = threading.get_ident()
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            if hasattr(attr, "__dict__") and not isinstance(attr, type):
                return TimedProxy(attr, self._root)  # a part with methods of its own
            return attr
        root = self._root

        @functools.wraps(attr)
        def timed(*args, **kwargs):
            if threading.get_ident() != root._thread:
                return attr(*args, **kwargs)
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                root.seconds += time.perf_counter() - started
                root.calls += 1

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
