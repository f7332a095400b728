"""Local worker processes: the one place that builds a ``celery worker`` command line for
``settings`` (:func:`worker_command`: ``pelletseg worker``, ``pelletseg run``, the benchmarks
and the tests), and N of them started and stopped together (:class:`LocalWorkers`), against
whatever the settings name (embedded SQLite broker and job table by default; Redis, RabbitMQ,
SQS and PostgreSQL by environment). Imports no torch: the workers it starts do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from core.settings import Settings
from queues.names import QUEUES, queue_name

__all__ = ["RESTART_STATUS", "ForeignCheckout", "LocalWorkers", "check_working_directory",
           "log_tail", "settings_env", "worker_command"]

#: The folder this pelletseg was imported from (the parent of ``worker/``).
CODE_ROOT = Path(__file__).resolve().parents[1]


class ForeignCheckout(RuntimeError):
    """The working directory holds another pelletseg checkout than the running one."""


def check_working_directory() -> None:
    """Refuse to start workers where they would run other code than this process.

    Celery imports ``-A worker.tasks`` with the working directory first on ``sys.path``, so
    workers started in a directory holding another ``worker/tasks.py`` (another checkout, a
    snapshot) would run that code, whatever ``PYTHONPATH`` says.

    Raises:
        ForeignCheckout: the working directory holds another ``worker/tasks.py`` than
            :data:`CODE_ROOT`'s (the message says which and what to do).
    """
    shadow = Path.cwd() / "worker" / "tasks.py"
    if shadow.is_file() and shadow.resolve() != CODE_ROOT / "worker" / "tasks.py":
        raise ForeignCheckout(
            f"the working directory {Path.cwd()} holds another pelletseg checkout (worker/"
            f"tasks.py) than the one running ({CODE_ROOT}); Celery would start the workers "
            "from it. Run pelletseg from another directory, or from that checkout's own "
            "environment")


#: Exit status of a worker that asks to be started again (a stalled consumer:
#: :class:`worker.liveness.Liveness`; EX_TEMPFAIL).
RESTART_STATUS = 75


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment for child processes that reproduces ``settings``: every field set
    explicitly (``--home``, test overrides) as its ``PELLETSEG_*`` variable, JSON for lists
    and dicts, plus the resolved database, broker and store URLs."""
    env = dict(os.environ)
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):  # str() would give "**********"
            value = value.get_secret_value()
        env[f"PELLETSEG_{name.upper()}"] = (
            json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        )
    env["PELLETSEG_HOME"] = str(settings.home)
    env["PELLETSEG_DATABASE_URL"] = settings.resolved_database_url
    env["PELLETSEG_BROKER_URL"] = settings.resolved_broker_url
    env["PELLETSEG_STORAGE_URL"] = settings.resolved_storage_url
    return env


def worker_command(settings: Settings, queues: list[str], name: str, *, processes: int = 1,
                   cpu_share: int | None = None, threads: int = 0,
                   beat: bool = False) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` of one ``celery worker`` for ``settings``: the one place that builds it
    (``pelletseg worker``, ``pelletseg run``'s local workers, the tests).

    The environment is :func:`settings_env` with the machine's cores split into torch threads
    between ``cpu_share`` processes (default: this worker's ``processes``) unless
    ``PELLETSEG_TORCH_THREADS`` is set. The pool: ``prefork -c N`` for
    ``processes`` > 1; else ``threads -c threads`` when ``threads`` is above 1 (a reduce
    worker that runs streaming stitchers beside reducers); else ``threads -c
    PELLETSEG_ROWS_IN_FLIGHT`` when that is above 1 (the rows share one model); else ``solo``
    (one task at a time, what the spot watcher expects).
    Queue names carry ``PELLETSEG_QUEUE_PREFIX``; ``beat`` adds the reconciler schedule (run
    it in one worker per stack).

    Raises:
        ForeignCheckout: the working directory holds another pelletseg checkout
            (:func:`check_working_directory`).
    """
    check_working_directory()
    env = settings_env(settings)
    if not settings.torch_threads:
        share = max(1, cpu_share or processes)
        env["PELLETSEG_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // share))
    if processes > 1:
        pool = ["--pool", "prefork", "-c", str(processes)]
    elif threads > 1:
        pool = ["--pool", "threads", "-c", str(threads)]
    elif settings.rows_in_flight > 1:
        pool = ["--pool", "threads", "-c", str(settings.rows_in_flight)]
    else:
        pool = ["--pool", "solo", "-c", "1"]  # else Celery's banner shows the core count
    argv = [
        sys.executable, "-m", "celery", "-A", "worker.tasks", "worker",
        "-Q", ",".join(queue_name(settings, q) for q in queues), *pool, "-n", name,
        "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    if beat:
        argv += ["--beat", "--schedule", str(settings.home / "celerybeat-schedule")]
    return argv, env


@dataclass
class LocalWorkers:
    """N local ``celery worker`` processes (solo pool: one task at a time each), plus one for
    the ``reduce`` queue with ``PELLETSEG_STREAM_REDUCE``.

    Each worker gets ``cores // N`` torch threads so N workers share the CPU instead of
    oversubscribing it. Logs go to ``home/logs/worker-{i}.log``.
    """

    settings: Settings
    count: int
    queues: tuple[str, ...] = QUEUES  # logical names; PELLETSEG_QUEUE_PREFIX is added
    procs: list[subprocess.Popen] = field(default_factory=list)
    restarts: int = 0  # workers started again after exiting with RESTART_STATUS
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _supervisor: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> LocalWorkers:
        (self.settings.home / "logs").mkdir(parents=True, exist_ok=True)
        self.procs = [self._spawn(i) for i in range(self.count + self._stitching)]
        self._stopping.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="local-workers",
                                            daemon=True)
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                for i, p in enumerate(self.procs):
                    if p.poll() == RESTART_STATUS and not self._stopping.is_set():
                        self.procs[i] = self._spawn(i)
                        self.restarts += 1

    @property
    def _stitching(self) -> int:
        """1 if an extra worker takes the ``reduce`` queue: with ``PELLETSEG_STREAM_REDUCE`` a
        streaming stitcher waits there for the whole job, and must not hold a row worker."""
        return int(self.settings.stream_reduce and "reduce" in self.queues and self.count > 0)

    def _spawn(self, i: int) -> subprocess.Popen:
        # N single-process workers: the cores are split between all N. The stitching worker
        # (index N) runs a stitcher and a reducer at once in threads; it needs no torch.
        queues, threads = list(self.queues), 0
        if self._stitching:
            queues, threads = ([q for q in queues if q != "reduce"], 0) if i < self.count \
                else (["reduce"], 2)
        argv, env = worker_command(self.settings, queues, f"pelletseg{i}-{os.getpid()}@%h",
                                   cpu_share=self.count, threads=threads)
        with open(self.settings.home / "logs" / f"worker-{i}.log", "ab") as log:
            return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def kill(self, i: int) -> None:
        """SIGKILL worker ``i`` (as a spot reclaim or OOM would) and start a fresh one in its
        place; the killed worker's unfinished row is recovered through its lease."""
        with self._lock:
            self.procs[i].kill()
            self.procs[i].wait()
            self.procs[i] = self._spawn(i)

    def alive(self) -> int:
        """Number of worker processes still running."""
        return sum(p.poll() is None for p in self.procs)

    def peak_rss_mib(self) -> list[float]:
        """Peak resident memory (VmHWM, MiB) of each live worker; empty where /proc is absent."""
        peaks = []
        for p in self.procs:
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return peaks

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM: finish the current task), then SIGKILL after ``timeout`` s."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def log_tail(settings: Settings, lines: int = 20) -> str:
    """Last lines of each local worker log, for error messages."""
    out = []
    for path in sorted((settings.home / "logs").glob("worker-*.log")):
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(out)
