"""Celery tasks: thin wrappers that unpack the message and call the stage functions.

Start a worker with ``celery -A worker.tasks worker -Q plan,rows,reduce`` (``pelletseg run``
does this for you; with ``PELLETSEG_QUEUE_PREFIX`` the queues carry the prefix). Settings come
from ``PELLETSEG_*`` environment variables. Each stage task runs through
:class:`worker.deadletter.DeliveryPolicy`, which acks, redelivers or dead-letters its message; the
worker signals start the spot interruption watcher (``worker/spot.py``) and declare the
dead-letter queues.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import structlog
from celery import Celery, Task
from celery.signals import (
    task_postrun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from core.settings import Settings, get_settings
from core.states import JobStatus
from queues.app import make_celery, task_queue
from queues.embedded import SHUTDOWN_CHECK_SECONDS
from queues.names import (
    NOTIFY_TASK,
    PLAN_TASK,
    RECONCILE_TASK,
    REDUCE_TASK,
    ROW_TASK,
    STITCH_TASK,
    queue_name,
)
from storage.errors import StorageError
from worker.context import WorkerContext
from worker.deadletter import DeliveryPolicy, judge_done, judge_row

log = structlog.get_logger(__name__)


@dataclass
class WorkerSlots:
    """What ``worker_ready`` found out about this worker process (:func:`wire_worker_signals`).

    Attributes:
        stitch_blocks_rows: The worker takes the ``rows`` queue with a single task slot, so a
            streaming stitcher running here would wait for rows that only this worker could
            run: it must refuse (the reducer stitches at the end instead).
    """

    stitch_blocks_rows: bool = False


def register_tasks(app: Celery, context: Callable[[], WorkerContext],
                   delivery: DeliveryPolicy, slots: WorkerSlots | None = None) -> None:
    """Define pelletseg's tasks on ``app``; ``context()`` gives the process's
    :class:`WorkerContext` (called inside the task, i.e. after the worker forked), and
    ``delivery`` settles each stage task's message (ack, redeliver or dead-letter)."""
    slots = slots or WorkerSlots()

    def run(task: Task, stage, judge, give_up=None):
        from imaging.errors import clear_vips_errors
        from worker.spot import draining

        clear_vips_errors()  # a libvips error then names this task's files only
        if draining():  # a spot notice came: hand the message back for another worker
            delivery.redeliver(task, "worker draining on a spot interruption notice")
        return delivery.run(task, stage, judge, give_up)

    def fail_job(job_id: str) -> Callable[[str], None]:
        return lambda reason: context().table.jobs.transition(job_id, JobStatus.FAILED,
                                                            error=reason)

    @app.task(name=PLAN_TASK, bind=True, shared=False)
    def plan_job(self, job_id: str) -> int:
        """Plan a job; returns the number of rows enqueued."""
        from worker.stages.guard import plan_guarded

        rows = run(self, lambda: plan_guarded(context(), job_id), judge_done, fail_job(job_id))
        return len(rows or [])

    @app.task(name=ROW_TASK, bind=True, shared=False)
    def segment_row(self, job_id: str, index: int) -> str | None:
        """Segment one row record; returns what happened (``done``, ``duplicate``, ...)."""
        from worker.stages.segmenting import segment_row as segment

        def reason() -> str:
            return context().table.rows.get(job_id, index).error or "row failed"

        return run(self, lambda: segment(context(), job_id, index),
                   lambda outcome: judge_row(outcome, reason))

    @app.task(name=RECONCILE_TASK, shared=False)
    def reconcile() -> int:
        """Re-enqueue rows whose lease expired or whose message was lost; returns how many."""
        from worker.stages.reconciling import reconcile as run_reconcile

        try:
            return len(run_reconcile(context()))
        except StorageError as e:  # the next beat tick tries again
            log.warning("reconcile.failed", error=str(e))
            return 0

    @app.task(name=REDUCE_TASK, bind=True, shared=False)
    def reduce_job(self, job_id: str) -> bool:
        """Stitch a job's rows into its outputs; returns True if this call finished the job."""
        from worker.stages.guard import reduce_guarded

        return run(self, lambda: reduce_guarded(context(), job_id), judge_done,
                   fail_job(job_id)) is not None

    @app.task(name=STITCH_TASK, shared=False)
    def stitch(job_id: str) -> bool:
        """Stitch a job's pictures while its rows run; returns True if they are staged. Never
        fails the job or its message: without staged pictures the reducer stitches."""
        from imaging.errors import clear_vips_errors
        from worker.spot import draining
        from worker.stages.streaming import stitch_job

        clear_vips_errors()
        if draining():
            return False
        if slots.stitch_blocks_rows:
            log.warning("stitch.refused", job_id=job_id,
                        reason="this worker takes the rows queue with one task slot: the stitch "
                        "would wait for rows only it can run; give the reduce queue a worker of "
                        "its own (threads pool), as pelletseg run does")
            return False
        try:
            return stitch_job(context(), job_id)
        except Exception as e:  # the reducer takes over; say why
            log.exception("stitch.crashed", job_id=job_id, error=str(e))
            return False

    register_notify(app, context)


#: Above this delay a webhook retry waits for the reconciler's sweep instead of a countdown
#: message held by a worker (s).
MAX_NOTIFY_COUNTDOWN_S = 300.0


def register_notify(app: Celery, context: Callable[[], WorkerContext]) -> None:
    """Define the ``pelletseg.notify`` task (one webhook delivery attempt, re-sent with a
    countdown after a failure), and send it as soon as a stage task has ended its job."""

    @app.task(name=NOTIFY_TASK, shared=False)
    def notify(job_id: str) -> bool:
        """Deliver a job's webhook if due; returns True if a retry was scheduled."""
        from worker.stages.notifying import deliver

        retry_in = deliver(context(), job_id)
        if retry_in is None or retry_in > MAX_NOTIFY_COUNTDOWN_S:
            return False
        app.send_task(NOTIFY_TASK, args=[job_id], queue=task_queue(app, NOTIFY_TASK),
                      countdown=retry_in)
        return True

    @task_postrun.connect(weak=False)
    def _notify_when_ended(sender=None, args=None, **_):
        if sender is None or sender.app is not app or not args:
            return
        if sender.name in (PLAN_TASK, ROW_TASK, REDUCE_TASK):
            from worker.stages.notifying import kick

            kick(context(), args[0])


def make_worker_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with pelletseg's tasks registered, Celery's consumer
    without native delayed delivery (``worker/consumer.py``), and the worker signals wired."""
    from worker.logs import connect as connect_logs

    connect_logs()
    app = make_celery(settings, main="pelletseg-worker")
    app.conf.worker_consumer = "worker.consumer:Consumer"

    lock = threading.Lock()

    @lru_cache(maxsize=1)
    def build(pid: int) -> WorkerContext:
        return WorkerContext.on_broker(settings, app)

    def context() -> WorkerContext:
        # A threads pool (PELLETSEG_ROWS_IN_FLIGHT > 1) may start two tasks at once: build one
        # context (one model cache) per process, not one per racing thread; keyed by pid, so a
        # forked pool process gets its own worker id (host:pid), never its parent's.
        with lock:
            return build(os.getpid())

    slots = WorkerSlots()
    register_tasks(app, context, DeliveryPolicy(app, settings), slots)
    wire_worker_signals(app, settings, context, slots)
    return app


#: What a worker that takes the ``rows`` queue imports to run the model (the stack of
#: ``pip install '.[worker]'``); the CPU workers' image (``.[stages]``) has none of it.
ROW_MODULES = ("torch", "segmentation_models_pytorch")


def missing_row_modules() -> list[str]:
    """The :data:`ROW_MODULES` this install cannot import (found without importing them)."""
    return [name for name in ROW_MODULES if importlib.util.find_spec(name) is None]


def _consumed(app: Celery):
    """The queues a worker of ``app`` consumes (every declared one without ``-Q``)."""
    return app.amqp.queues.consume_from or app.amqp.queues


def wire_worker_signals(app: Celery, settings: Settings,
                        context: Callable[[], WorkerContext],
                        slots: WorkerSlots | None = None) -> None:
    """Connect ``app``'s worker signals: ``worker_init`` stops a worker that takes the rows
    queue without the model stack (:func:`missing_row_modules`: the CPU workers' image) with
    what to run instead, and declares the dead-letter queues
    (RabbitMQ drops dead letters it cannot route); ``worker_ready`` records the worker's task
    slots in ``slots``, starts the heartbeat and reconcile thread (``worker/liveness.py``; pool
    processes beat from ``worker_process_init``) and the spot interruption watcher when
    ``PELLETSEG_SPOT_MODE`` is not ``off``, and makes an event-loop worker look at its shutdown
    flag every ``SHUTDOWN_CHECK_SECONDS``; ``worker_shutdown`` stops them. The process that
    runs tasks (a prefork pool's children, else the worker) starts the background imports of
    :mod:`worker.preload`."""
    watchers: list = []
    uid = f"pelletseg-{id(app)}"
    slots = slots or WorkerSlots()

    def note_slots(sender=None, **_):
        if getattr(sender, "app", None) is not app:
            return
        pool = getattr(sender, "pool", None)
        solo = pool is None or type(pool).__module__.endswith(".solo")
        count = 1 if solo else int(getattr(sender.controller, "concurrency", 1) or 1)
        slots.stitch_blocks_rows = count <= 1 and queue_name(settings, "rows") in _consumed(app)

    def refuse_rows_without_model_stack(sender=None, **_):
        if getattr(sender, "app", None) is not app:
            return
        rows = queue_name(settings, "rows")
        if rows in _consumed(app) and (missing := missing_row_modules()):
            # SystemExit passes Celery's signal dispatch, which logs and drops Exceptions
            raise SystemExit(
                f"this worker takes the rows queue ({rows}) but cannot import "
                f"{', '.join(missing)}: this install runs no model (the API's `pip install .`, "
                "or the CPU workers' '.[stages]', deploy/Dockerfile.worker-cpu, which plans "
                "and reduces only). Install the model stack (pip install '.[worker]') or run "
                "rows on the worker image (deploy/Dockerfile.worker), or leave rows out of this "
                "worker's queues (-Q plan,reduce; pelletseg worker --queues plan,reduce)")

    def declare(sender=None, **_):
        if getattr(sender, "app", None) is not app:
            return
        from queues.deadletters import declare_dead_letter_queues

        try:
            declare_dead_letter_queues(settings)
        except StorageError as e:  # broker away: Celery keeps reconnecting; say why
            log.error("deadletter.declare_failed", error=str(e))

    def start_watcher(sender=None, **_):
        if getattr(sender, "app", None) is not app or settings.spot_mode == "off":
            return
        from worker.spot import Drain, Imds, SpotWatcher

        drain = Drain(sender, settings.spot_mode, context)
        watchers.append(SpotWatcher(Imds(settings.spot_metadata_url),
                                    settings.spot_poll_seconds, drain).start())
        log.info("spot.watching", url=settings.spot_metadata_url, mode=settings.spot_mode)

    def wake_for_shutdown(sender=None, **_):
        # An event-loop worker (Redis, RabbitMQ, SQS) sleeps in its hub's poll until the next
        # timer, up to 10 s, before it looks at its shutdown flag: an idle worker on RabbitMQ
        # took 7.6-8.6 s to leave after SIGTERM (2026-12-07). A repeating no-op timer bounds
        # that; the embedded broker's blocking loop has no hub (queues.embedded does it there).
        if getattr(sender, "app", None) is not app:
            return
        hub = getattr(getattr(sender, "controller", None), "hub", None)
        if hub is not None:
            hub.call_repeatedly(SHUTDOWN_CHECK_SECONDS, _look_at_shutdown_flag)

    def stop_watchers(sender=None, **_):
        if getattr(sender, "app", None) is not app:
            return
        while watchers:
            watchers.pop().stop()

    beating: list = []
    wired_in = os.getpid()

    def start_liveness(sender=None, **_):
        # main process: beats and reconciles; solo/threads pools run the rows here too
        if getattr(sender, "app", None) is not app:
            return
        from worker.liveness import Liveness

        probe = stall_probe(sender) if _celery_worker_process() else None
        beating.append(Liveness(context, stall_probe=probe).start())

    def preload_in_tasks_process(sender=None, **_):
        # the process that runs tasks imports what the stages load lazily, in the background:
        # a prefork pool's children (worker_process_init), else the worker itself
        if sender is not None and getattr(sender, "app", app) is not app:
            return
        pool = getattr(sender, "pool", None)
        if sender is not None and type(pool).__module__.endswith(".prefork"):
            return  # its children preload (worker_process_init)
        from worker.preload import start_preload

        start_preload()

    def start_child_liveness(**_):
        # a prefork pool process claims rows under its own host:pid: it beats for them. The
        # solo pool sends this signal in the worker's own process (beating from worker_ready
        # already), and so do in-process test workers: only a forked child starts a thread.
        if os.getpid() == wired_in:
            return
        from worker.liveness import Liveness

        beating.clear()  # the parent's thread did not survive the fork
        beating.append(Liveness(context, beats_only=True).start())

    def stop_liveness(sender=None, **_):
        if sender is not None and getattr(sender, "app", app) is not app:
            return
        while beating:
            beating.pop().stop()

    worker_ready.connect(start_liveness, weak=False, dispatch_uid=uid + "-liveness")
    worker_ready.connect(preload_in_tasks_process, weak=False, dispatch_uid=uid + "-preload")
    worker_process_init.connect(lambda **_: os.getpid() != wired_in and
                                preload_in_tasks_process(), weak=False,
                                dispatch_uid=uid + "-preload-child")
    worker_process_init.connect(start_child_liveness, weak=False,
                                dispatch_uid=uid + "-liveness-child")
    worker_shutdown.connect(stop_liveness, weak=False, dispatch_uid=uid + "-liveness-stop")
    worker_process_shutdown.connect(stop_liveness, weak=False,
                                    dispatch_uid=uid + "-liveness-child-stop")
    worker_init.connect(refuse_rows_without_model_stack, weak=False,
                        dispatch_uid=uid + "-model-stack")
    worker_init.connect(declare, weak=False, dispatch_uid=uid + "-declare")
    worker_ready.connect(note_slots, weak=False, dispatch_uid=uid + "-slots")
    worker_ready.connect(start_watcher, weak=False, dispatch_uid=uid + "-spot")
    worker_shutdown.connect(stop_watchers, weak=False, dispatch_uid=uid + "-spot-stop")
    worker_ready.connect(wake_for_shutdown, weak=False, dispatch_uid=uid + "-wake")


def _look_at_shutdown_flag() -> None:
    """A no-op timer callback: its only effect is that the event loop's poll returns."""


def _celery_worker_process() -> bool:
    """True in a process started as ``celery worker`` (what :func:`worker.local.worker_command`
    runs): only there may a stalled consumer end the process; never in a test's in-process
    worker."""
    return sys.argv[0].endswith(os.path.join("celery", "__main__.py")) and "worker" in sys.argv


def stall_probe(consumer):
    """``() -> (idle, waiting)`` for :class:`worker.liveness.Liveness`: idle when the worker
    holds no request (reserved or running: :mod:`celery.worker.state`) and is not draining on
    a spot notice, waiting = messages in the queues ``consumer`` reads
    (:func:`queues.depths.queue_depths`)."""
    from celery.worker import state

    from queues.depths import queue_depths
    from worker.spot import draining

    names = {q.name: q.name for q in consumer.task_consumer.queues} \
        if getattr(consumer, "task_consumer", None) is not None else {}

    def probe() -> tuple[bool, int]:
        if draining():  # a spot notice stopped the consumer on purpose
            return False, 0
        idle = not state.active_requests and not state.reserved_requests
        if not idle or not names:
            return idle, 0
        return idle, sum(queue_depths(consumer.app, names).values())

    return probe


app = make_worker_app(get_settings())
