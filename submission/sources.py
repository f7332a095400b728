"""Where a file source submitted through the HTTP API may come from.

The API reads files on the server's disk on behalf of whoever holds a key, so a ``file`` source
(or a bare path) must resolve, after symlinks, inside one of the source roots:
``PELLETSEG_SOURCE_ROOTS`` plus the uploads folder of a local blob store. Relative paths,
``file://`` URLs with a host part (``file://../x``) and paths with ``..`` are refused, as is
everything when no root is configured. The CLI's own ``pelletseg run PATH`` is not confined:
the user reads their own files.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from core.settings import Settings
from core.sources import is_bare_path, local_path, source_scheme
from storage.blobs import BlobStore
from storage.errors import StorageError

__all__ = ["SourceRootError", "confine_file_source", "local_scenes", "source_roots",
           "upload_scenes"]

#: Bytes per read of an upload's first TIFF page (header and OME-XML) from a remote store.
SCENE_READ_BLOCK = 256 * 1024


class SourceRootError(ValueError):
    """A file source is outside the allowed source roots (or no root is configured)."""


def source_roots(settings: Settings) -> list[Path]:
    """The resolved folders file sources may come from: ``PELLETSEG_SOURCE_ROOTS`` and, with a
    local blob store (``file://``), its ``uploads`` folder."""
    roots = [Path(r).expanduser().resolve() for r in settings.source_roots]
    store = urlparse(settings.resolved_storage_url)
    if store.scheme == "file":
        roots.append(Path(unquote(store.path)).resolve() / "uploads")
    return roots


def _describe(roots: list[Path]) -> str:
    if not roots:
        return ("this server allows no file sources: its operator may set "
                "PELLETSEG_SOURCE_ROOTS (a JSON list of folders); or upload the file "
                "(POST /v1/uploads) or give an s3:// URL")
    return ("allowed source roots: " + ", ".join(str(r) for r in roots)
            + " (the server's PELLETSEG_SOURCE_ROOTS and uploads folder)")


def confine_file_source(source: str, settings: Settings) -> Path:
    """Check a ``file://`` URL or bare path submitted through the API against the source roots.

    Returns:
        The resolved path (symlinks followed), inside a root.

    Raises:
        SourceRootError: a relative path, a ``file://`` URL with a host (``file://../x``), a
            path with ``..``, a path that resolves (after symlinks) outside every root, or no
            root configured; the message names the allowed roots.
    """
    roots = source_roots(settings)
    if is_bare_path(source):
        raw = source
    else:
        parsed = urlparse(source)
        if parsed.netloc not in ("", "localhost"):
            raise SourceRootError(
                f"{source}: a file URL must be absolute (file:///path); {parsed.netloc!r} is "
                f"read as a host, and relative file URLs are refused; {_describe(roots)}")
        raw = unquote(parsed.path)
    path = Path(raw)
    if not path.is_absolute():
        raise SourceRootError(f"{source}: relative paths are refused; give an absolute path "
                              f"inside a source root ({_describe(roots)})")
    if ".." in path.parts:
        raise SourceRootError(f"{source}: paths with '..' are refused ({_describe(roots)})")
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError, ValueError) as e:
        raise SourceRootError(f"{source!r} is not a usable file path: {e}") from e
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise SourceRootError(f"{source}: outside the source roots ({_describe(roots)})")
    return resolved


def local_scenes(source: str) -> list[int]:
    """The scenes of a local OME-TIFF of several images of similar size (one per pellet of a
    mount), 0-based as the file numbers its OME Images: a job each is what ``pelletseg run``
    submits (:func:`imaging.formats.source_scenes`; an upload's: :func:`upload_scenes`).
    ``[]`` for a source of one image, one that is not a local file (an ``s3://`` source is not
    opened here: its job, without a scene, is refused at planning naming its scenes) and one
    that cannot be read (its job's checks say what is wrong).

    Args:
        source: A ``file://`` URL or a bare local path.
    """
    if source_scheme(source) != "file":
        return []
    from imaging.errors import ImageFormatError  # pyvips and tifffile: only when needed
    from imaging.formats import source_scenes

    try:
        found = source_scenes(local_path(source))
    except (ImageFormatError, OSError):
        return []
    return found if len(found) > 1 else []


def upload_scenes(blobs: BlobStore, key: str) -> list[int]:
    """:func:`local_scenes` of an upload (the blob ``key`` in ``blobs``), in a local store or
    on S3: only the first page's header and OME-XML are read (on S3 in ranged reads of
    :data:`SCENE_READ_BLOCK` bytes), never its pixels. ``[]`` for a file of one image, another
    format, or one that cannot be read (its job's checks say what is wrong)."""
    from imaging.errors import ImageFormatError  # pyvips and tifffile: only when needed
    from imaging.formats.ometiff import ome_scenes

    try:
        with blobs.open_read(key, block_size=SCENE_READ_BLOCK) as file:
            found = ome_scenes(file)  # another format: "not an OME-TIFF" from its first bytes
    except (ImageFormatError, StorageError, OSError):
        return []
    return found if len(found) > 1 else []
