"""Job sources: check a source URL against the allowed schemes, bring it to local disk, and
say which local file a job's rows read (:func:`source_path`).

Reading a TIFF region by region straight from S3 manages only 2-3 regions/s, so a worker
copies a remote source to its local cache once per job and reads regions locally.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

import fsspec

from core.sources import local_path, source_scheme
from core.spec import JobSpec
from storage.blobs.layout import thumbnail_row_key
from worker.context import WorkerContext
from worker.errors import SourceError

__all__ = ["check_source", "localize", "row_thumbnails", "source_path"]


def check_source(url: str, allowed_schemes: list[str]) -> str:
    """Validate a source URL's scheme.

    Returns:
        The scheme.

    Raises:
        SourceError: the scheme is not in ``allowed_schemes`` (PELLETSEG_ALLOWED_SOURCE_SCHEMES).
    """
    scheme = source_scheme(url)
    if scheme not in allowed_schemes:
        raise SourceError(
            f"source {url!r}: scheme {scheme!r} is not allowed; allowed: {', '.join(allowed_schemes)}"
        )
    return scheme


def localize(url: str, cache_dir: Path, allowed_schemes: list[str]) -> Path:
    """A local file with the source's bytes: the file itself for ``file://``, else a cached
    copy under ``cache_dir/sources`` (downloaded once per machine, atomically).

    Raises:
        SourceError: scheme not allowed, or the source does not exist / cannot be read.
    """
    scheme = check_source(url, allowed_schemes)
    if scheme == "file":
        path = local_path(url)
        if not path.is_file():
            raise SourceError(f"source {url!r} does not exist (no file at {path})")
        return path
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = os.path.basename(urlparse(url).path) or "source"
    target = cache_dir / "sources" / digest / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{name}.part-{os.getpid()}")
    try:
        fs, path = fsspec.core.url_to_fs(url)
        fs.get_file(path, str(tmp))
        os.replace(tmp, target)
    except FileNotFoundError as e:
        raise SourceError(f"source {url!r} does not exist") from e
    except (OSError, ValueError, ImportError) as e:
        raise SourceError(f"source {url!r} cannot be read: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return target


def source_path(ctx: WorkerContext, job) -> Path:
    """Local file the rows of ``job`` read: the converted ``source.tif`` if planning made one,
    else the original source.

    Raises:
        SourceError: the source is gone or not allowed.
        BlobNotFoundError: the converted source is missing from the store.
    """
    key = (job.outputs or {}).get("source")
    if key:
        return ctx.local_blob(key)
    spec = JobSpec.from_stored(job.spec)
    return localize(spec.source_url, ctx.cache_dir, ctx.settings.allowed_source_schemes)


def row_thumbnails(ctx: WorkerContext, job, rows) -> list[Path] | None:
    """Local files of the rows' source thumbnails in row order (``rows/NNNNN.thumbnail.png``,
    written by ``segment_row``), for the preview's left panel; None when a row has none (rows
    checkpointed before thumbnails existed): the preview then decodes the source.

    Raises:
        StorageError: the store is unreachable.
    """
    keys = [thumbnail_row_key(job.id, r.index) for r in rows]
    if not keys or not all(ctx.blobs.exists(k) for k in keys):
        return None
    return [ctx.local_blob(k) for k in keys]
