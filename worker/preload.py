"""Background imports of what a worker's stages load on first use, started as the worker
process starts, so the first row and the first reduce of a fresh (e.g. newly scaled-up spot)
worker do not pay them on the job's critical path.

Measured on CPU-2 (2026-12-03, docs/performance.md "Cold worker"): ``scipy.ndimage`` (the
row's microstructure partial) 0.39 s, ``matplotlib`` with the Agg backend (the reducer's
``radial_profiles.png``) 0.60 s, ``ome_types`` (the OME-XML of every pyramid) 0.32 s; the
first reduce of a 37.7 Mpx job in a fresh process took 3.06 s after :func:`preload` against
4.39 s without (medians of 3). The imports run in a daemon thread: model inference and libvips release the
GIL, so a task that starts meanwhile is slowed only by the CPU they take, which it would
otherwise spend itself. Imports only (no torch, no model); an import that fails is logged
and left to the stage that needs it.
"""

from __future__ import annotations

import importlib
import threading

import structlog

__all__ = ["PRELOADED_MODULES", "preload", "start_preload"]

log = structlog.get_logger(__name__)

#: Modules the stages import lazily, heaviest first.
PRELOADED_MODULES = ("matplotlib.figure", "scipy.ndimage", "ome_types")


def preload() -> list[str]:
    """Import :data:`PRELOADED_MODULES` (matplotlib on the Agg backend, as
    :mod:`microstructure.report` uses it); returns the ones that could not be imported."""
    failed = []
    for name in PRELOADED_MODULES:
        try:
            if name.startswith("matplotlib"):
                import matplotlib

                matplotlib.use("Agg", force=False)
            importlib.import_module(name)
        except Exception as e:  # an optional extra may be missing: the stage reports it
            log.warning("worker.preload_failed", module=name, error=str(e))
            failed.append(name)
    return failed


def start_preload() -> threading.Thread:
    """Run :func:`preload` in a daemon thread named ``pelletseg-preload``; returns it."""
    thread = threading.Thread(target=preload, name="pelletseg-preload", daemon=True)
    thread.start()
    return thread
