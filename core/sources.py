"""The one rule for what a job's source URL is, shared by the API (which checks it at
submission) and the workers (which check it again before reading): a URL's scheme, where a
bare path (or a Windows drive letter such as ``C:``) counts as ``file``."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

__all__ = ["BFCONVERT", "is_bare_path", "local_path", "source_name", "source_scheme"]

#: How a microscope's own format that pelletseg does not read (Olympus/Evident .vsi, Leica
#: .lif, Nikon .nd2, Imaris .ims, ...) becomes one it does: Bio-Formats' command-line tools
#: (https://www.openmicroscopy.org/bio-formats/), as the CLI and the workers say it.
BFCONVERT = ("convert it to OME-TIFF with Bio-Formats' bfconvert (`bfconvert -series N "
             "-compression LZW IN OUT.ome.tif`; `showinf -nopix IN` lists the series, the "
             "full-resolution scan usually first) and submit that")


def source_scheme(url: str) -> str:
    """Scheme of a source URL (``s3``, ``gs``, ``file``, ...); a bare path counts as ``file``."""
    scheme = urlparse(url).scheme
    return scheme if len(scheme) > 1 else "file"


def is_bare_path(url: str) -> bool:
    """True if ``url`` is a local path rather than a URL (no scheme, or a drive letter)."""
    return len(urlparse(url).scheme) <= 1


def local_path(url: str) -> Path:
    """Path of a ``file://`` URL (percent-decoded) or of a bare path."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(url)


def source_name(url: str) -> str:
    """The file name a source URL names, as the store that reads it sees it: a local path's or
    a ``file://`` URL's last part (percent-decoded), an ``http(s)://`` URL's path's last part
    (percent-decoded, without its query: a presigned URL's signature), and an object store's
    key's last part as written (``s3://``, ``gs://``, ...: fsspec reads ``#``, ``?`` and ``%``
    in a key as themselves, so ``s3://b/pellet #3.tif`` is ``pellet #3.tif``). ``""`` where the
    URL ends in ``/``."""
    scheme = source_scheme(url)
    if scheme == "file":
        return local_path(url).name
    if scheme in ("http", "https"):
        return PurePosixPath(unquote(urlparse(url).path)).name
    return url.rsplit("/", 1)[-1]
