"""Publishing and fetching model packages: blobs under ``models/{name}/{version}/`` plus a
record in the model table (name, version, weights sha256)."""

from __future__ import annotations

from pathlib import Path

from storage.errors import BlobNotFoundError
from storage.layout import model_prefix
from worker.context import WorkerContext
from worker.errors import ModelPackageError
from worker.packages import MODEL_JSON, WEIGHTS_FILE, ModelPackage, read_package

#: Model packages shipped inside the wheel, published on first use of a stack.
MODEL_ZOO = Path(__file__).with_name("model_zoo")


def publish_package(ctx: WorkerContext, folder: str | Path) -> ModelPackage:
    """Verify a local package, upload it and register it; idempotent for identical weights.

    Raises:
        ModelPackageError: the package is invalid or its checksum fails.
        StorageError: (name, version) already exists with other weights.
    """
    pkg = read_package(folder)
    prefix = model_prefix(pkg.name, pkg.version)
    for fname in (WEIGHTS_FILE, MODEL_JSON):
        key = f"{prefix}/{fname}"
        if not ctx.blobs.exists(key):
            ctx.blobs.put_file(key, Path(folder) / fname)
    ctx.jobs.register_model(
        name=pkg.name,
        version=pkg.version,
        sha256=pkg.weights_sha256,
        architecture=pkg.architecture,
        encoder=pkg.encoder,
        classes=[c.model_dump(mode="json") for c in pkg.classes],
        metrics=pkg.metrics,
    )
    return pkg


def publish_bundled(ctx: WorkerContext) -> list[ModelPackage]:
    """Publish every package in ``worker/model_zoo/{name}/{version}/`` (idempotent)."""
    return [publish_package(ctx, meta.parent) for meta in sorted(MODEL_ZOO.glob(f"*/*/{MODEL_JSON}"))]


def fetch_package(ctx: WorkerContext, name: str, version: str, sha256: str) -> Path:
    """Local folder holding the package ``name``/``version``, verified against ``sha256``.

    Raises:
        ModelPackageError: the package is missing from the store, or its weights do not match
            ``sha256`` (the sha256 the job was planned with).
    """
    prefix = model_prefix(name, version)
    try:
        meta = ctx.local_blob(f"{prefix}/{MODEL_JSON}")
        ctx.local_blob(f"{prefix}/{WEIGHTS_FILE}")
    except BlobNotFoundError as e:
        raise ModelPackageError(f"model {name} {version} is missing from the store: {e}") from e
    pkg = read_package(meta.parent)
    if pkg.weights_sha256 != sha256:
        raise ModelPackageError(
            f"model {name} {version}: stored weights sha256 {pkg.weights_sha256[:12]}... differ "
            f"from the registered {sha256[:12]}...; the package was replaced: re-register it"
        )
    return meta.parent


def load_package_meta(ctx: WorkerContext, name: str, version: str) -> ModelPackage:
    """model.json of a stored package, without loading weights.

    Raises:
        ModelPackageError: missing or invalid model.json.
    """
    try:
        meta = ctx.local_blob(f"{model_prefix(name, version)}/{MODEL_JSON}")
    except BlobNotFoundError as e:
        raise ModelPackageError(f"model {name} {version} is missing from the store: {e}") from e
    return read_package(meta.parent, verify=False)
