"""Spot interruption: a worker-side watcher of the EC2 instance metadata service (IMDSv2).

EC2 announces the reclaim of a spot instance two minutes ahead at
``/latest/meta-data/spot/instance-action`` (404 until then; then JSON
``{"action": "terminate" | "stop" | "hibernate", "time": "2026-11-23T10:00:00Z"}``), readable
with a session token from ``PUT /latest/api/token`` (IMDSv2; AWS EC2 User Guide, "Spot
Instance interruption notices" and "Use IMDSv2").

A :class:`SpotWatcher` thread in the worker's main process polls it every
``PELLETSEG_SPOT_POLL_SECONDS``. On a notice :class:`Drain`:

1. marks the process draining (a task delivered from now on is handed back to the broker
   without running: :func:`draining`);
2. cancels the worker's consumers, so it takes no new rows (on the worker's event loop
   thread where there is one, as Celery's consumer is not thread-safe);
3. with ``PELLETSEG_SPOT_MODE=release``, hands the rows this worker holds back to ``pending``
   at once, without costing them an attempt, and enqueues them again so that another worker
   starts them now, not after the lease expires; with ``finish`` the running row finishes
   (it must fit in the notice: a GPU row takes seconds).

The worker process stays up, idle, until the instance goes; a released row whose attempt
still finishes here is harmless (same checkpoint bytes; the table counts the row once).
Started and stopped by the ``worker_ready`` / ``worker_shutdown`` signals
(:func:`worker.tasks.make_worker_app`), only when ``PELLETSEG_SPOT_MODE`` is not ``off``.
The draining mark is per process: run GPU workers with the solo (or threads) pool, as
``pelletseg run`` does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
import urllib3

from queues.names import ROW_TASK
from worker.context import WorkerContext
from worker.errors import WorkerError

log = structlog.get_logger(__name__)

TOKEN_PATH = "/latest/api/token"
ACTION_PATH = "/latest/meta-data/spot/instance-action"
#: Lifetime asked for an IMDSv2 session token (s); a new one is fetched a minute before.
TOKEN_TTL_S = 21600

_draining = threading.Event()


class MetadataError(WorkerError):
    """The instance metadata service answered something unexpected (or not at all)."""


@dataclass(frozen=True)
class Notice:
    """A spot interruption notice.

    Attributes:
        action: ``terminate``, ``stop`` or ``hibernate``.
        time: When EC2 acts (UTC), if the notice says.
    """

    action: str
    time: datetime | None


def draining() -> bool:
    """True once this process got a spot interruption notice: tasks must not start."""
    return _draining.is_set()


class Imds:
    """Minimal IMDSv2 client (urllib3): a session token, then the spot instance-action.

    Args:
        base_url: The metadata service, ``http://169.254.169.254`` on EC2.
        timeout: Connect and read timeout of each request (s).
    """

    def __init__(self, base_url: str, timeout: float = 2.0):
        self.base_url = base_url.rstrip("/")
        self.http = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout))
        self._token: str | None = None
        self._token_until = 0.0

    def token(self, now: float) -> str:
        """An IMDSv2 session token, reused until a minute before it expires.

        Raises:
            MetadataError: the service refused or is unreachable.
        """
        if self._token is None or now >= self._token_until:
            resp = self._request("PUT", TOKEN_PATH,
                                 {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
            if resp.status != 200:
                raise MetadataError(f"IMDSv2 token request answered HTTP {resp.status}")
            self._token = resp.data.decode().strip()
            self._token_until = now + TOKEN_TTL_S - 60
        return self._token

    def instance_action(self, now: float) -> Notice | None:
        """The pending spot interruption notice, or None if there is none (HTTP 404).

        A token the service no longer accepts (HTTP 401) is replaced once.

        Raises:
            MetadataError: unreachable, an unexpected status, or a malformed notice.
        """
        for _ in range(2):
            resp = self._request("GET", ACTION_PATH,
                                 {"X-aws-ec2-metadata-token": self.token(now)})
            if resp.status == 401:
                self._token = None
                continue
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise MetadataError(f"{ACTION_PATH} answered HTTP {resp.status}")
            return parse_notice(resp.data)
        raise MetadataError("the metadata service refused two fresh IMDSv2 tokens")

    def _request(self, method: str, path: str, headers: dict) -> urllib3.BaseHTTPResponse:
        try:
            return self.http.request(method, self.base_url + path, headers=headers)
        except urllib3.exceptions.HTTPError as e:
            raise MetadataError(f"metadata service {self.base_url} unreachable: {e}") from e


def parse_notice(body: bytes) -> Notice:
    """A :class:`Notice` from the instance-action JSON.

    Raises:
        MetadataError: not JSON, or no ``action``.
    """
    try:
        doc = json.loads(body)
        action = str(doc["action"])
    except (ValueError, KeyError, TypeError) as e:
        raise MetadataError(f"malformed spot instance-action {body[:200]!r}: {e}") from e
    when = None
    if doc.get("time"):
        try:
            when = datetime.fromisoformat(str(doc["time"]))
        except ValueError:
            when = None
    return Notice(action=action, time=when)


class SpotWatcher:
    """A daemon thread polling :meth:`Imds.instance_action` every ``interval`` s (the first
    poll at once); calls ``on_notice(notice)`` once, on the first notice, then ends.

    An unreachable or odd metadata service is logged (once per kind of error) and polled
    again at the next tick.
    """

    def __init__(self, imds: Imds, interval: float, on_notice: Callable[[Notice], None]):
        self.imds, self.interval, self.on_notice = imds, interval, on_notice
        self.notice: Notice | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spot-watcher", daemon=True)
        self._logged: set[str] = set()

    def start(self) -> SpotWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling (the worker is shutting down)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                notice = self.imds.instance_action(time.monotonic())
            except MetadataError as e:
                kind = str(e).split(":", 1)[0]
                if kind not in self._logged:
                    self._logged.add(kind)
                    log.warning("spot.poll_failed", error=str(e))
                notice = None
            self.polls += 1
            if notice is not None:
                self.notice = notice
                log.warning("spot.notice", action=notice.action,
                            time=notice.time.isoformat() if notice.time else None)
                try:
                    self.on_notice(notice)
                except Exception:  # the watcher must not die silently
                    log.exception("spot.drain_failed")
                return
            self._stop.wait(self.interval)


class Drain:
    """What a worker does on a spot notice (see the module docstring).

    Args:
        consumer: The worker's Celery consumer (``worker_ready``'s sender).
        mode: ``finish`` or ``release``.
        context: Gives the process's :class:`WorkerContext` (job table, enqueue).
        active_workers: Returns the ``host:pid`` ids of the processes running this worker's
            tasks (the process itself with the solo pool; pool children otherwise).
    """

    def __init__(self, consumer, mode: str, context: Callable[[], WorkerContext],
                 active_workers: Callable[[WorkerContext], set[str]] | None = None):
        self.consumer, self.mode, self.context = consumer, mode, context
        self.active_workers = active_workers or _active_workers
        self.released: list[tuple[str, int]] = []

    def __call__(self, notice: Notice) -> None:
        _draining.set()
        self.stop_consuming()
        if self.mode == "release":
            self.release(notice)

    def stop_consuming(self) -> None:
        """Cancel every task queue of the consumer, on its event loop thread if it has one."""
        consumer = self.consumer

        def cancel() -> None:
            task_consumer = getattr(consumer, "task_consumer", None)
            names = [q.name for q in getattr(task_consumer, "queues", None) or []]
            for name in names:
                consumer.cancel_task_queue(name)
            log.warning("spot.consumers_cancelled", queues=names)

        hub = getattr(consumer, "hub", None)
        if hub is not None:
            hub.call_soon(cancel)
        else:  # no event loop (the embedded broker): the draining mark covers the race
            cancel()

    def release(self, notice: Notice) -> list[tuple[str, int]]:
        """Hand this worker's running rows back to ``pending`` (no attempt spent) and enqueue
        them again; returns them."""
        ctx = self.context()
        reason = f"released by {ctx.worker_id} on a spot {notice.action} notice"
        if notice.time is not None:
            reason += f" (instance {notice.action} at {notice.time.isoformat()})"
        self.released = ctx.table.recovery.release_rows(self.active_workers(ctx), reason)
        for job_id, index in self.released:
            ctx.enqueue(ROW_TASK, job_id, index)
        log.warning("spot.rows_released", rows=self.released)
        return self.released


def _active_workers(ctx: WorkerContext) -> set[str]:
    """``host:pid`` of this process and of the pool processes running its active tasks."""
    from celery.worker import state

    host = ctx.worker_id.rsplit(":", 1)[0]
    ids = {ctx.worker_id}
    for request in list(state.active_requests):
        pid = getattr(request, "worker_pid", None)
        if pid:
            ids.add(f"{host}:{pid}")
    return ids


def clear_draining() -> None:
    """Clear this process's draining mark (for tests that drain several times in one
    process; a real notice is never withdrawn)."""
    _draining.clear()
