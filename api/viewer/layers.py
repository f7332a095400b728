"""The viewer's layers of a job as local pyramidal TIFFs, read by :mod:`api.viewer.deepzoom`.

=========  ======================================================================  ======
layer      file                                                                    tiles
=========  ======================================================================  ======
overlay    ``jobs/{id}/overlay.tif`` (pyramidal JPEG, written by the reducer)      JPEG
labels     ``jobs/{id}/labels.tif`` (pyramidal uint8 class indices)                PNG
source     the job's source image, converted once to a pyramidal JPEG TIFF here    JPEG
confidence ``jobs/{id}/confidence.tif`` (pyramidal uint8 confidence; newer jobs)   PNG
=========  ======================================================================  ======

Outputs in a local store are read in place. Outputs in a remote store (S3, GCS) are copied
once to ``{cache_dir}/viewer/{job_id}/`` (reading TIFF regions through fsspec manages only a
few regions per second). The source (``jobs/{id}/source.tif`` when the planner converted
it, else the job's source URL) is rarely pyramidal, so it is converted once, on the first
request, to ``{cache_dir}/viewer/{job_id}/source.tif``. Fills are serialised by a file lock
(threads and processes), written to a temporary name and renamed. The cache is pruned,
oldest job first, when it grows past ``max_cache_bytes``; it may also be deleted at any time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path

import fsspec
import pyvips
from filelock import FileLock

from api.viewer.deepzoom import PixelKind, Pyramid, open_pyramid
from core.sources import local_path, source_scheme
from imaging import ImageFormatError, to_rgb8
from imaging.errors import clear_vips_errors, vips_text
from storage.blobs.layout import CONFIDENCE, LABELS, OVERLAY, SOURCE, output_key
from storage.blobs.store import BlobStore
from storage.errors import BlobNotFoundError, StorageError
from storage.jobtable.tables import Job

#: Default size limit of the viewer cache (bytes).
MAX_CACHE_BYTES = 20 * 1024**3
CACHE_FOLDER = "viewer"


class Layer(StrEnum):
    """A layer of the deep-zoom viewer."""

    OVERLAY = "overlay"
    LABELS = "labels"
    SOURCE = "source"
    CONFIDENCE = "confidence"


LAYER_KIND = {Layer.OVERLAY: PixelKind.IMAGE, Layer.LABELS: PixelKind.LABELS,
              Layer.SOURCE: PixelKind.IMAGE, Layer.CONFIDENCE: PixelKind.CONFIDENCE}
_OUTPUT = {Layer.OVERLAY: OVERLAY, Layer.LABELS: LABELS, Layer.CONFIDENCE: CONFIDENCE}


class LayerUnavailable(LookupError):
    """A job's layer cannot be shown (output missing, source gone or not allowed)."""


class LayerFiles:
    """Local pyramidal TIFFs of jobs' viewer layers (see the module docstring).

    Args:
        blobs: The job outputs' blob store.
        cache_dir: Machine-local scratch folder (``Settings.resolved_cache_dir``).
        allowed_schemes: Source URL schemes this server may read
            (``Settings.allowed_source_schemes``).
        max_cache_bytes: Size past which the oldest jobs' cached files are deleted.
    """

    def __init__(self, blobs: BlobStore, cache_dir: Path, allowed_schemes: list[str],
                 max_cache_bytes: int = MAX_CACHE_BYTES):
        self.blobs = blobs
        self.root = Path(cache_dir) / CACHE_FOLDER
        self.allowed_schemes = list(allowed_schemes)
        self.max_cache_bytes = max_cache_bytes

    # ------------------------------------------------------------------ public
    def check(self, job: Job, layer: Layer) -> None:
        """Cheap availability check (no copy, no conversion).

        Raises:
            LayerUnavailable: the output or the source cannot be found or is not allowed.
            StorageError: the store is unreachable.
        """
        if layer in _OUTPUT:
            key = output_key(job.id, _OUTPUT[layer])
            if not self.blobs.exists(key):
                raise LayerUnavailable(f"job {job.id} has no {_OUTPUT[layer]}")
            return
        if self._cached(job, SOURCE).exists():
            return
        key = self._source_key(job)
        if key is not None:
            return
        url = job.source_url
        scheme = source_scheme(url)
        if scheme not in self.allowed_schemes:
            raise LayerUnavailable(
                f"the source of job {job.id} is a {scheme}:// URL, which this server may not "
                f"read (allowed: {', '.join(self.allowed_schemes)})"
            )
        if scheme == "file" and not local_path(url).is_file():
            raise LayerUnavailable(f"the source of job {job.id} ({url}) no longer exists")

    def open(self, job: Job, layer: Layer) -> Pyramid:
        """The layer's :class:`Pyramid`, copying or converting it first if needed.

        Raises:
            LayerUnavailable: as :meth:`check`, or the source cannot be read as an image.
            StorageError: the store is unreachable.
        """
        # libvips' error buffer is the process's: left as it is, a libvips error of this
        # request would carry text of earlier ones (other jobs' paths) into its answer
        clear_vips_errors()
        for attempt in range(2):
            path = self.path(job, layer)
            try:
                return open_pyramid(path, LAYER_KIND[layer])
            except FileNotFoundError:
                if attempt:  # pruned twice in a row: give up
                    raise LayerUnavailable(f"{layer} of job {job.id}: {path} vanished") from None
            except (pyvips.Error, ValueError) as e:
                raise LayerUnavailable(f"{layer} of job {job.id} cannot be read: {vips_text(e)}") from e
        raise AssertionError("unreachable")

    def path(self, job: Job, layer: Layer) -> Path:
        """Local path of the layer's pyramidal TIFF (filled on first use). Once filled, no
        request reaches the store: a tile costs a ``stat`` here.

        Raises:
            LayerUnavailable, StorageError: as :meth:`check`.
        """
        if layer in _OUTPUT:
            key = output_key(job.id, _OUTPUT[layer])
            if self.blobs.is_local:
                local = Path(self.blobs.path(key))
                if not local.is_file():
                    raise LayerUnavailable(f"job {job.id} has no {_OUTPUT[layer]}")
                return local
            cached = self._cached(job, _OUTPUT[layer])
            if cached.exists():
                return cached
            self.check(job, layer)
            return self._fill(job, _OUTPUT[layer], lambda tmp: self.blobs.get_file(key, tmp))
        cached = self._cached(job, SOURCE)
        if cached.exists():
            return cached
        self.check(job, layer)
        return self._fill(job, SOURCE, lambda tmp: self._build_source(job, tmp))

    # ------------------------------------------------------------------ helpers
    def _cached(self, job: Job, name: str) -> Path:
        return self.root / job.id / name

    def _source_key(self, job: Job) -> str | None:
        key = (job.outputs or {}).get("source")
        return key if isinstance(key, str) and self.blobs.exists(key) else None

    def _fill(self, job: Job, name: str, make) -> Path:
        target = self._cached(job, name)
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if target.exists():  # another thread or process filled it meanwhile
                return target
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=name + ".part-", suffix=".tif")
            os.close(fd)
            try:
                make(Path(tmp))
                os.replace(tmp, target)
            except BlobNotFoundError as e:
                raise LayerUnavailable(str(e)) from e
            finally:
                Path(tmp).unlink(missing_ok=True)
        self._prune(keep=job.id)
        return target

    def _build_source(self, job: Job, out: Path) -> None:
        """Convert the job's source to a pyramidal JPEG TIFF at ``out`` (one streaming pass)."""
        key = self._source_key(job)
        download = None
        try:
            if key is not None and self.blobs.is_local:
                local = Path(self.blobs.path(key))
            elif key is not None:
                download = out.with_name(out.name + ".src")
                local = self.blobs.get_file(key, download)
            elif source_scheme(job.source_url) == "file":
                local = local_path(job.source_url)
            else:
                download = out.with_name(out.name + ".src")
                fs, path = fsspec.core.url_to_fs(job.source_url)
                fs.get_file(path, str(download))
                local = download
            image = pyvips.Image.new_from_file(str(local), access="sequential")
            to_rgb8(image).tiffsave(
                str(out), tile=True, tile_width=256, tile_height=256, pyramid=True,
                compression="jpeg", Q=85, bigtiff=True, keep="none",
            )
        except FileNotFoundError as e:
            raise LayerUnavailable(f"the source of job {job.id} does not exist: {e}") from e
        except (pyvips.Error, ImageFormatError) as e:
            raise LayerUnavailable(f"the source of job {job.id} ({job.source_url}) cannot be "
                                   f"converted for viewing: {vips_text(e)}") from e
        except (OSError, ValueError, ImportError) as e:
            raise StorageError(f"cannot read the source of job {job.id}: {e}") from e
        finally:
            if download is not None:
                download.unlink(missing_ok=True)

    def _prune(self, keep: str) -> None:
        """Delete whole job folders, least recently filled first, while the cache is larger
        than ``max_cache_bytes`` (never the folder of ``keep``)."""
        folders = []
        total = 0
        for folder in self.root.iterdir():
            try:  # another process may be pruning too
                if not folder.is_dir():
                    continue
                size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                folders.append((folder.stat().st_mtime, folder, size))
            except OSError:
                continue
            total += size
        for _, folder, size in sorted(folders):
            if total <= self.max_cache_bytes:
                break
            if folder.name == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
