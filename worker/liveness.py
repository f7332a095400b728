"""Worker liveness: each worker process beats in the job table and runs the reconcile pass.

A :class:`Liveness` thread in every worker process (started by the worker signals in
``worker/tasks.py``) registers the process (``host:pid``), beats every
``PELLETSEG_HEARTBEAT_SECONDS`` (s) (which also keeps the leases of the rows it has in flight,
:data:`worker.leases.ROWS_IN_FLIGHT`, and hands back any other row it holds) and,
unless ``beats_only``, runs :func:`worker.stages.reconciling.reconcile` every
``PELLETSEG_RECONCILE_SECONDS`` (s) and, every :data:`worker.cache.SWEEP_SECONDS`, removes
the machine's cached files of jobs that no longer run (:func:`worker.cache.sweep`). So a
SIGKILLed, OOM-killed or lost worker is noticed within three beats by any live worker, on
every broker, without depending on one ``--beat`` process (docs/reliability.md). A clean stop
marks the process stopped.

The main process of a ``celery worker`` also watches its own consumer (:class:`StallWatch`):
kombu can stop consuming after a broker restart that broke an ack, leaving a live process
that never takes another message; idle for ``PELLETSEG_CONSUMER_STALL_SECONDS`` while its
queues hold messages, the process marks itself stopped and exits so its supervisor starts a
fresh one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Self

import structlog

from storage.errors import StorageError
from worker.cache import SWEEP_SECONDS, sweep
from worker.context import WorkerContext
from worker.leases import ROWS_IN_FLIGHT
from worker.local import RESTART_STATUS

log = structlog.get_logger(__name__)

__all__ = ["Liveness", "StallWatch"]


class StallWatch:
    """Judges a consumer stalled: idle (no task reserved or running) with messages waiting in
    its queues, at every observation for ``seconds`` (s) in a row. A healthy idle consumer
    takes a waiting message within milliseconds, so this is never a busy or a starved worker.

    Args:
        seconds: How long the condition must hold; 0 disables the watch.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.since: float | None = None

    def observe(self, idle: bool, waiting: int, now: float) -> bool:
        """One observation at ``now`` (monotonic s); True once stalled for ``seconds``."""
        if not self.seconds or not idle or waiting <= 0:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.seconds


#: What a stall probe returns: (idle, messages waiting in the worker's queues).
StallProbe = Callable[[], tuple[bool, int]]


class Liveness:
    """Heartbeat (and reconcile) thread of one worker process.

    Args:
        context: Gives the process's :class:`WorkerContext` (called in the thread).
        beats_only: Only beat (pool child processes); the pool's main process reconciles.
        stall_probe: The consumer's state, checked at every beat (the main process of a
            ``celery worker``); None: no stall watch.
        on_stall: Called once the consumer is judged stalled, after the worker is marked
            stopped (default: exit the process with status 75 for its supervisor to restart).
    """

    def __init__(self, context: Callable[[], WorkerContext], *, beats_only: bool = False,
                 stall_probe: StallProbe | None = None,
                 on_stall: Callable[[], None] | None = None):
        self.context, self.beats_only = context, beats_only
        self.stall_probe = stall_probe
        self.on_stall = on_stall or (lambda: os._exit(RESTART_STATUS))  # start me again
        self.stall_watch: StallWatch | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pelletseg-liveness",
                                        daemon=True)
        self.worker_id: str | None = None
        self.beats = 0
        self.reconciles = 0
        self.sweeps = 0

    def start(self) -> Self:
        self._thread.start()
        return self

    def _register(self, ctx: WorkerContext) -> None:
        from queues.names import ROW_TASK

        in_flight, since = ROWS_IN_FLIGHT.snapshot()  # rows this process already works on
        given_back = ctx.table.heartbeats.register(ctx.worker_id, ctx.settings.heartbeat_seconds,
                                                   in_flight, since)
        self.worker_id = ctx.worker_id
        for job_id, index in given_back:
            ctx.enqueue(ROW_TASK, job_id, index)
        if given_back:
            log.warning("liveness.predecessor_rows", worker=ctx.worker_id, rows=given_back)

    def _run(self) -> None:
        from queues.names import ROW_TASK
        from worker.stages.reconciling import reconcile

        registered = False
        last_reconcile = last_sweep = time.monotonic()
        ctx = None
        while not self._stop.is_set():
            try:
                ctx = ctx or self.context()
                settings = ctx.settings
                if not registered:
                    self._register(ctx)
                    registered = True
                else:
                    in_flight, since = ROWS_IN_FLIGHT.snapshot()
                    beat = ctx.table.heartbeats.beat(ctx.worker_id, settings.heartbeat_seconds,
                                                     settings.lease_seconds, in_flight, since)
                    if not beat.alive:
                        log.warning("liveness.judged_dead", worker=ctx.worker_id)
                        registered = False
                        continue
                    for job_id, index in beat.requeue:
                        ctx.enqueue(ROW_TASK, job_id, index)
                    if beat.requeue:
                        log.warning("liveness.stray_rows", worker=ctx.worker_id,
                                    rows=beat.requeue)
                self.beats += 1
                if self._stalled(ctx):
                    return
                every = settings.reconcile_seconds
                if not self.beats_only and every > 0 \
                        and time.monotonic() - last_reconcile >= every:
                    last_reconcile = time.monotonic()
                    reconcile(ctx)
                    self.reconciles += 1
                if not self.beats_only and time.monotonic() - last_sweep >= SWEEP_SECONDS:
                    last_sweep = time.monotonic()
                    sweep(ctx.cache_dir, not ctx.blobs.is_local, ctx.table.jobs.statuses)
                    self.sweeps += 1
            except StorageError as e:  # the job table is away: try again at the next beat
                log.warning("liveness.failed", error=str(e))
            except Exception as e:  # never let the thread die silently
                log.exception("liveness.crashed", error=str(e))
            interval = ctx.settings.heartbeat_seconds if ctx is not None else 1.0
            self._stop.wait(interval)

    def _stalled(self, ctx: WorkerContext) -> bool:
        """Check the consumer; if stalled, mark this worker stopped (its rows go back at once)
        and call ``on_stall``. A probe that fails (broker away) counts as not stalled."""
        if self.stall_probe is None or not ctx.settings.consumer_stall_seconds:
            return False
        if self.stall_watch is None:
            self.stall_watch = StallWatch(ctx.settings.consumer_stall_seconds)
        try:
            idle, waiting = self.stall_probe()
        except Exception as e:  # the broker is away: Celery's own reconnect is at work
            log.info("liveness.stall_probe_failed", error=str(e))
            idle, waiting = False, 0
        if not self.stall_watch.observe(idle, waiting, time.monotonic()):
            return False
        log.error("liveness.consumer_stalled", worker=ctx.worker_id, waiting=waiting,
                  seconds=ctx.settings.consumer_stall_seconds,
                  action="marked stopped; exiting for the supervisor to start a fresh worker")
        try:
            ctx.table.heartbeats.stop(ctx.worker_id)
        except StorageError as e:
            log.warning("liveness.stop_failed", error=str(e))
        self.on_stall()
        return True

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
