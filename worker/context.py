"""What a worker process needs to run a stage: settings, the job table, the blob store, the
model registry, a way to enqueue the next task, and per-process caches (loaded models)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from core.settings import Settings
from models import ModelRegistry
from storage.blobs import BlobStore
from storage.blobs.layout import ROW_CHECKPOINT_TAG
from storage.jobtable import JobTable, job_table

__all__ = ["Enqueue", "WorkerContext"]

Enqueue = Callable[..., None]


@dataclass
class WorkerContext:
    """Dependencies of the stage functions in :mod:`worker.stages`.

    Attributes:
        settings: Machine settings.
        table: The job table.
        blobs: The blob store.
        enqueue: ``enqueue(task_name, *args)`` sends the next task (Celery in production,
            a list in unit tests).
        worker_id: ``host:pid``, recorded on claimed rows.
        queue_depth: ``queue_depth(logical)``: messages waiting in a logical queue (``plan``,
            ``rows``, ``reduce``) on the broker (:func:`queues.depths.depth_reader`); None
            where there is no broker (unit tests), and the reconciler then waits for the
            timeouts alone.
        segmenters: Loaded models of this process, by (name, version, sha256, precision).
        uploads_swept_at: ``time.monotonic()`` of this process's last retention sweep of
            uploads (:func:`worker.stages.reconciling.expire_retained_uploads`); None before
            the first.
    """

    settings: Settings
    table: JobTable
    blobs: BlobStore
    enqueue: Enqueue
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    queue_depth: Callable[[str], int] | None = None
    segmenters: dict = field(default_factory=dict)
    uploads_swept_at: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, enqueue: Enqueue,
                      queue_depth: Callable[[str], int] | None = None) -> WorkerContext:
        """Connect to the job table and blob store that ``settings`` name."""
        settings.ensure_home()
        return cls(
            settings=settings,
            table=job_table(settings),
            blobs=BlobStore(settings.resolved_storage_url),
            enqueue=enqueue,
            queue_depth=queue_depth,
        )

    @classmethod
    def on_broker(cls, settings: Settings, app) -> WorkerContext:
        """:meth:`from_settings` with ``enqueue`` sending through ``app`` (a Celery app:
        :func:`queues.app.send`) and ``queue_depth`` reading its broker
        (:func:`queues.depths.depth_reader`): a worker's context and ``pelletseg run``'s."""
        from queues.app import send
        from queues.depths import depth_reader

        return cls.from_settings(settings, lambda task, *args: send(app, task, *args),
                                 depth_reader(app, settings))

    @property
    def cache_dir(self) -> Path:
        """Local scratch folder of this machine."""
        return self.settings.resolved_cache_dir

    @cached_property
    def models(self) -> ModelRegistry:
        """The model registry over this context's job table and blob store."""
        return ModelRegistry(self.table, self.blobs, self.cache_dir)

    def put_row_blob(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` as a row checkpoint object (tagged
        :data:`storage.blobs.layout.ROW_CHECKPOINT_TAG`, which the bucket's lifecycle rule
        selects), through a scratch file under :attr:`cache_dir`; atomic.

        Raises:
            StorageError: the store is unreachable.
        """
        scratch = self.cache_dir / "rows"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            path = Path(tmp) / key.rsplit("/", 1)[-1]
            path.write_bytes(data)
            self.blobs.put_file(key, path, tags=ROW_CHECKPOINT_TAG)

    def local_blob(self, key: str) -> Path:
        """A local file holding blob ``key`` (:meth:`storage.blobs.BlobStore.local_file`).

        Raises:
            BlobNotFoundError: ``key`` does not exist.
        """
        return self.blobs.local_file(key, self.cache_dir)
