"""What a worker process needs to run a stage: settings, the job table, the blob store, a way
to enqueue the next task, and per-process caches (loaded models, localised sources)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from storage.blobs import BlobStore
from storage.errors import BlobNotFoundError
from storage.jobs import JobStore, job_store
from storage.settings import Settings

Enqueue = Callable[..., None]


@dataclass
class WorkerContext:
    """Dependencies of the stage functions in ``planning``, ``segmenting`` and ``reducing``.

    Attributes:
        settings: Machine settings.
        jobs: The job table.
        blobs: The blob store.
        enqueue: ``enqueue(task_name, *args)`` sends the next task (Celery in production,
            a list in unit tests).
        worker_id: ``host:pid``, recorded on claimed rows.
    """

    settings: Settings
    jobs: JobStore
    blobs: BlobStore
    enqueue: Enqueue
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    segmenters: dict = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, enqueue: Enqueue) -> "WorkerContext":
        """Connect to the job table and blob store that ``settings`` name."""
        settings.ensure_home()
        return cls(
            settings=settings,
            jobs=job_store(settings),
            blobs=BlobStore(settings.resolved_storage_url),
            enqueue=enqueue,
        )

    @property
    def cache_dir(self) -> Path:
        """Local scratch folder of this machine."""
        return self.settings.resolved_cache_dir

    def local_blob(self, key: str) -> Path:
        """A local file holding blob ``key``: the blob itself on a local store, else a cached
        download under ``cache_dir/blobs``.

        Raises:
            BlobNotFoundError: ``key`` does not exist.
        """
        if self.blobs.is_local:
            path = Path(self.blobs.path(key))
            if not path.exists():
                raise BlobNotFoundError(f"{self.blobs.url(key)} does not exist")
            return path
        target = self.cache_dir / "blobs" / key
        if not target.exists():
            self.blobs.get_file(key, target)
        return target
