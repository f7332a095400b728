"""Worker liveness: each worker process beats in the job table and runs the reconcile pass.

A :class:`Liveness` thread in every worker process (started by the worker signals in
``worker/tasks.py``) registers the process (``host:pid``), beats every
``PELLETSEG_HEARTBEAT_SECONDS`` (s) (which also keeps the leases of the rows it holds) and,
unless ``beats_only``, runs :func:`worker.stages.reconciling.reconcile` every
``PELLETSEG_RECONCILE_SECONDS`` (s). So a SIGKILLed, OOM-killed or lost worker is noticed
within three beats by any live worker, on every broker, without depending on one ``--beat``
process (docs/reliability.md). A clean stop marks the process stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Self

import structlog

from storage.errors import StorageError
from worker.context import WorkerContext

log = structlog.get_logger(__name__)

__all__ = ["Liveness"]


class Liveness:
    """Heartbeat (and reconcile) thread of one worker process.

    Args:
        context: Gives the process's :class:`WorkerContext` (called in the thread).
        beats_only: Only beat (pool child processes); the pool's main process reconciles.
    """

    def __init__(self, context: Callable[[], WorkerContext], *, beats_only: bool = False):
        self.context, self.beats_only = context, beats_only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pelletseg-liveness",
                                        daemon=True)
        self.worker_id: str | None = None
        self.beats = 0
        self.reconciles = 0

    def start(self) -> Self:
        self._thread.start()
        return self

    def _register(self, ctx: WorkerContext) -> None:
        from queues.names import ROW_TASK

        given_back = ctx.table.heartbeats.register(ctx.worker_id, ctx.settings.heartbeat_seconds)
        self.worker_id = ctx.worker_id
        for job_id, index in given_back:
            ctx.enqueue(ROW_TASK, job_id, index)
        if given_back:
            log.warning("liveness.predecessor_rows", worker=ctx.worker_id, rows=given_back)

    def _run(self) -> None:
        from worker.stages.reconciling import reconcile

        registered = False
        last_reconcile = time.monotonic()
        ctx = None
        while not self._stop.is_set():
            try:
                ctx = ctx or self.context()
                settings = ctx.settings
                if not registered:
                    self._register(ctx)
                    registered = True
                elif not ctx.table.heartbeats.beat(ctx.worker_id, settings.heartbeat_seconds,
                                                   settings.lease_seconds):
                    log.warning("liveness.judged_dead", worker=ctx.worker_id)
                    registered = False
                    continue
                self.beats += 1
                every = settings.reconcile_seconds
                if not self.beats_only and every > 0 \
                        and time.monotonic() - last_reconcile >= every:
                    last_reconcile = time.monotonic()
                    reconcile(ctx)
                    self.reconciles += 1
            except StorageError as e:  # the job table is away: try again at the next beat
                log.warning("liveness.failed", error=str(e))
            except Exception as e:  # never let the thread die silently
                log.exception("liveness.crashed", error=str(e))
            interval = ctx.settings.heartbeat_seconds if ctx is not None else 1.0
            self._stop.wait(interval)

    def stop(self, mark_stopped: bool = True) -> None:
        """Stop beating; with ``mark_stopped`` record a clean stop (dead at once)."""
        self._stop.set()
        self._thread.join(timeout=10)
        if mark_stopped and self.worker_id is not None:
            try:
                self.context().table.heartbeats.stop(self.worker_id)
            except StorageError as e:
                log.warning("liveness.stop_failed", error=str(e))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
