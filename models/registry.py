"""The model registry: model packages in the blob store under ``models/{name}/{version}/``,
each with a record in the job table's ``models`` table (name, version, weights sha256).

Works from the job table and the blob store alone, so the API (which checks that a job's
model is registered and takes its tile geometry), the CLI, training and the workers share it
without torch.
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.settings import Settings
from models.package import (
    MODEL_JSON,
    WEIGHTS_FILE,
    ModelPackage,
    ModelPackageError,
    read_package,
)
from storage.blobs import BlobStore, model_prefix
from storage.errors import BlobNotFoundError
from storage.jobtable import JobTable, ModelRecord, job_table

__all__ = ["MODEL_ZOO", "ModelRegistry"]

#: Model packages shipped inside the wheel, published on first use of a stack.
MODEL_ZOO = Path(__file__).with_name("zoo")


class ModelRegistry:
    """Publish, resolve and fetch model packages.

    Args:
        table: The job table (model records).
        blobs: The blob store (package files).
        cache_dir: Local folder for packages downloaded from a remote store.
    """

    def __init__(self, table: JobTable, blobs: BlobStore, cache_dir: str | Path):
        self.table, self.blobs, self.cache_dir = table, blobs, Path(cache_dir)
        self._meta: dict[tuple[str, str], ModelPackage] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The registry of the job table and blob store that ``settings`` name."""
        return cls(job_table(settings), BlobStore(settings.resolved_storage_url),
                   settings.resolved_cache_dir)

    def publish(self, folder: str | Path) -> ModelPackage:
        """Verify a local package, upload it and register it; idempotent for identical weights.

        Raises:
            ModelPackageError: the package is invalid or its checksum fails.
            StorageError: (name, version) already exists with other weights.
        """
        pkg = read_package(folder)
        prefix = model_prefix(pkg.name, pkg.version)
        for fname in (WEIGHTS_FILE, MODEL_JSON):
            key = f"{prefix}/{fname}"
            if not self.blobs.exists(key):
                self.blobs.put_file(key, Path(folder) / fname)
        self.table.models.register(
            name=pkg.name,
            version=pkg.version,
            sha256=pkg.weights_sha256,
            architecture=pkg.architecture,
            encoder=pkg.encoder,
            classes=[c.model_dump(mode="json") for c in pkg.classes],
            metrics=pkg.metrics,
        )
        return pkg

    def publish_bundled(self) -> list[ModelPackage]:
        """Publish every package in ``models/zoo/{name}/{version}/`` (idempotent)."""
        return [self.publish(meta.parent) for meta in sorted(MODEL_ZOO.glob(f"*/*/{MODEL_JSON}"))]

    def resolve(self, name: str, version: str | None = None) -> ModelRecord:
        """The registered record of ``name`` at ``version`` (None: the newest registered).

        Raises:
            NotFoundError: no such model (the message lists the registered ones).
        """
        return self.table.models.get(name, version)

    def meta(self, name: str, version: str) -> ModelPackage:
        """``model.json`` of a stored package, without its weights (read once per process:
        a published version's files never change).

        Raises:
            ModelPackageError: missing or invalid model.json.
        """
        key = (name, version)
        with self._lock:
            if key not in self._meta:
                path = self._local(f"{model_prefix(name, version)}/{MODEL_JSON}", name, version)
                self._meta[key] = read_package(path.parent, verify=False)
            return self._meta[key]

    def fetch(self, name: str, version: str, sha256: str) -> Path:
        """Local folder holding the package ``name``/``version``, verified against ``sha256``.

        Raises:
            ModelPackageError: the package is missing from the store, or its weights do not
                match ``sha256`` (the sha256 the job was planned with).
        """
        prefix = model_prefix(name, version)
        meta = self._local(f"{prefix}/{MODEL_JSON}", name, version)
        self._local(f"{prefix}/{WEIGHTS_FILE}", name, version)
        pkg = read_package(meta.parent)
        if pkg.weights_sha256 != sha256:
            raise ModelPackageError(
                f"model {name} {version}: stored weights sha256 {pkg.weights_sha256[:12]}... "
                f"differ from the registered {sha256[:12]}...; the package was replaced: "
                "re-register it"
            )
        return meta.parent

    def _local(self, key: str, name: str, version: str) -> Path:
        try:
            return self.blobs.local_file(key, self.cache_dir)
        except BlobNotFoundError as e:
            raise ModelPackageError(
                f"model {name} {version} is missing from the store: {e}") from e
