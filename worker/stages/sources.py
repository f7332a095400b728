"""Job sources: check a source URL against the allowed schemes, bring it to local disk, and
say which local file a job's rows read (:func:`source_path`).

Reading a TIFF region by region straight from S3 manages only 2-3 regions/s, so a worker
copies a remote source into the job's folder of its local cache (``{cache}/jobs/{job}/original/``,
removed once the job ends: :mod:`worker.cache`) and reads regions locally.

The planner records the source's **identity** as the job output ``source_identity``: its size
and version (a local file's modification time; an object's version id, generation or ETag, as
its store reports them). Every later read of the original compares it (:func:`localize` with
``expected=``): a source replaced or rewritten since planning, whether a local file before a
resume or an object at the same URL while the job runs, fails the job with
:class:`SourceChangedError` instead of stitching rows of two images, and a job never reads a copy
of an earlier object at the same URL.
"""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec

from core.sources import local_path, source_name, source_scheme
from core.spec import JobSpec
from imaging.errors import OutputWriteError, disk_message
from storage.blobs.layout import thumbnail_row_key
from worker.cache import download_path, job_folder
from worker.context import WorkerContext
from worker.errors import SourceChangedError, SourceError

__all__ = ["check_source", "localize", "row_thumbnails", "source_identity", "source_path"]

#: Keys of fsspec's ``info()`` that name an object's version, most specific first: S3's version
#: id (versioned buckets), GCS's generation, an ETag (S3, HTTP, Azure), a checksum, a time.
VERSION_KEYS = ("VersionId", "generation", "ETag", "etag", "md5Hash", "content_md5",
                "LastModified", "last_modified", "updated", "mtime", "created")
#: ``errno`` of a local write that failed for want of disk (full, quota, read-only): the
#: download is retried, the source is not at fault.
LOCAL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
#: The sidecar beside a downloaded original: the identity it was downloaded at.
IDENTITY_FILE = "identity.json"
#: The folder of a job's cache folder holding its downloaded original.
ORIGINAL = "original"


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


def source_identity(url: str, allowed_schemes: list[str]) -> dict[str, Any]:
    """The identity of the source at ``url`` now: ``{"size": bytes, "version": str | None}``;
    ``version`` is a local file's modification time (ISO 8601, µs) or the first of
    :data:`VERSION_KEYS` the object's store reports (None where it reports none: then only the
    size tells a change).

    Raises:
        SourceError: scheme not allowed, or the source does not exist / cannot be read.
    """
    scheme = check_source(url, allowed_schemes)
    if scheme == "file":
        path = local_path(url)
        if not path.is_file():
            raise SourceError(f"source {url!r} does not exist (no file at {path})"
                              + _cut_file_url(url))
        st = path.stat()
        return {"size": st.st_size,
                "version": datetime.fromtimestamp(st.st_mtime, UTC).isoformat()}
    try:
        fs, path = fsspec.core.url_to_fs(url)
        fs.invalidate_cache(path)  # s3fs/gcsfs cache listings: ask the store itself
        info = fs.info(path)
    except FileNotFoundError as e:
        raise SourceError(f"source {url!r} does not exist") from e
    except (OSError, ValueError, ImportError) as e:
        raise SourceError(f"source {url!r} cannot be read: {e}") from e
    version = next((info[k] for k in VERSION_KEYS if info.get(k) not in (None, "")), None)
    return {"size": int(info.get("size") or 0),
            "version": None if version is None else str(version)}


def _cut_file_url(url: str) -> str:
    """What to do where a ``file://`` URL's ``#`` or ``?`` cut its path short (they start a
    URL's fragment and query); ``""`` otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or not (parsed.fragment or parsed.query):
        return ""
    return ("; '#' and '?' in a file:// URL start its fragment and query: write them as %23 "
            "and %3F (pathlib's Path.as_uri() does), or give the plain path")


def _check_unchanged(url: str, expected: dict[str, Any] | None, now: dict[str, Any]) -> None:
    if expected is None or expected == now:
        return
    what = "; ".join(f"{k} {expected.get(k)} -> {now.get(k)}" for k in ("size", "version")
                     if expected.get(k) != now.get(k))
    raise SourceChangedError(
        f"source {url!r} changed since the job was planned ({what}): rows already done were "
        "read from the earlier file, and a job never stitches rows of two images. Run it again "
        "as a new job on the file as it is now (pelletseg rerun JOB_ID, the job page's Run "
        "again, POST /v1/jobs/{id}/rerun), or put the earlier file back"
        + (" with its modification time (cp -p, rsync -a)" if source_scheme(url) == "file"
           else "") + " and resume this one.")


def localize(url: str, cache_dir: Path, job_id: str, allowed_schemes: list[str], *,
             expected: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """A local file with the source's bytes, and the identity it has
    (:func:`source_identity`): the file itself for ``file://``, else a copy downloaded once
    into the job's folder of the worker's cache (``{cache_dir}/jobs/{job_id}/original/``,
    through :func:`worker.cache.download_path`), with its identity beside it.

    Args:
        expected: The identity the job's planner recorded; None at planning.

    Raises:
        SourceChangedError: the source's identity is not ``expected`` (a local file rewritten,
            another object at the URL).
        SourceError: scheme not allowed, the source does not exist / cannot be read, or it
            was replaced while it was being downloaded.
        OutputWriteError: this machine's disk cannot take the download (not the source's
            fault: the task is retried).
    """
    if check_source(url, allowed_schemes) == "file":
        now = source_identity(url, allowed_schemes)
        _check_unchanged(url, expected, now)
        return local_path(url), now
    name = source_name(url) or "source"
    folder = job_folder(cache_dir, job_id) / ORIGINAL
    target, sidecar = folder / name, folder / IDENTITY_FILE
    held = _held(target, sidecar)
    if held is not None and (expected is None or held == expected):
        return target, held  # the copy this job's planner read
    now = source_identity(url, allowed_schemes)
    _check_unchanged(url, expected, now)
    tmp = download_path(cache_dir, job_id)
    try:
        try:
            fs, path = fsspec.core.url_to_fs(url)
            fs.get_file(path, str(tmp))
        except FileNotFoundError as e:
            raise SourceError(f"source {url!r} does not exist") from e
        except OSError as e:
            if e.errno in LOCAL_DISK_ERRNOS:  # this machine's disk, not the source
                raise OutputWriteError(e.errno, disk_message(
                    f"the download of {url!r} into {cache_dir}", os.strerror(e.errno),
                    "the source")) from e
            raise SourceError(f"source {url!r} cannot be read: {e}") from e
        except (ValueError, ImportError) as e:
            raise SourceError(f"source {url!r} cannot be read: {e}") from e
        if source_identity(url, allowed_schemes) != now:
            raise SourceError(f"source {url!r} was replaced while it was being downloaded; "
                              "resume the job once it stays as it is")
        folder.mkdir(parents=True, exist_ok=True)
        sidecar.unlink(missing_ok=True)
        os.replace(tmp, target)
        tmp.write_text(json.dumps(now))  # then the sidecar, whole or not at all
        os.replace(tmp, sidecar)
    finally:
        tmp.unlink(missing_ok=True)
    return target, now


def _held(target: Path, sidecar: Path) -> dict[str, Any] | None:
    """The identity a downloaded original was fetched at; None where there is no whole copy
    (no file, or no readable sidecar: a process died between the two moves)."""
    try:
        return json.loads(sidecar.read_text()) if target.exists() else None
    except (OSError, ValueError):
        return None


def source_path(ctx: WorkerContext, job) -> Path:
    """Local file the rows of ``job`` read: the converted ``source.tif`` if planning made one,
    else the original source, checked against the identity its planner recorded (jobs
    planned before identities were recorded are not checked).

    Raises:
        SourceChangedError: the original changed since the job was planned.
        SourceError: the source is gone or not allowed.
        BlobNotFoundError: the converted source is missing from the store.
    """
    outputs = job.outputs or {}
    if outputs.get("source"):
        return ctx.local_blob(outputs["source"])
    spec = JobSpec.from_stored(job.spec)
    return localize(spec.source_url, ctx.cache_dir, job.id, ctx.settings.allowed_source_schemes,
                    expected=outputs.get("source_identity"))[0]


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
