"""Which microscope or image format a file is, from its first bytes and, for TIFF-based
formats, its structure (tifffile) and OpenSlide's vendor detection."""

from __future__ import annotations

import os
from pathlib import Path

#: Formats pelletseg reads, as named by :func:`sniff_format` (the unsupported-format error
#: lists them).
OPENSLIDE_VENDORS = {
    "aperio": "Aperio SVS",
    "hamamatsu": "Hamamatsu NDPI/VMS/VMU",
    "leica": "Leica SCN",
    "mirax": "3DHISTECH MRXS",
    "philips": "Philips TIFF",
    "sakura": "Sakura SVSLIDE",
    "trestle": "Trestle TIFF",
    "ventana": "Ventana BIF",
    "dicom": "DICOM WSI",
    "zeiss": "Zeiss CZI (OpenSlide)",
}
SUPPORTED = (
    "TIFF/BigTIFF, OME-TIFF (single- or multi-resolution), Zeiss CZI, PNG, JPEG, and the "
    "whole-slide formats OpenSlide reads (Aperio SVS, Hamamatsu NDPI, 3DHISTECH MRXS, Leica "
    "SCN, Philips TIFF, Ventana BIF, ...)"
)

_MAGIC = {
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"II+\x00": "BigTIFF", b"MM\x00+": "BigTIFF",
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"ZISRAWFILE": "CZI",
}


def magic_format(path: str | os.PathLike) -> str | None:
    """Format named by the file's first bytes: ``TIFF``, ``BigTIFF``, ``PNG``, ``JPEG``,
    ``CZI`` or None (reads 16 bytes)."""
    with open(path, "rb") as f:
        head = f.read(16)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def openslide_vendor(path: str | os.PathLike) -> str | None:
    """OpenSlide's vendor name for ``path`` (``aperio``, ``hamamatsu``, ``mirax``, ...), or
    None when OpenSlide is not installed, does not recognise the file, or sees only a generic
    tiled TIFF (which libvips reads directly)."""
    try:
        import openslide
    except (ImportError, OSError):  # openslide-python or its library is not installed
        return None
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        return None
    return None if vendor in (None, "generic-tiff") else vendor


def _is_ome_tiff(path: Path) -> bool:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return bool(tif.is_ome)
    except Exception:  # a damaged TIFF (libvips reports it when it opens it), or no tifffile
        return False


def sniff_format(path: str | os.PathLike) -> str | None:
    """The format of ``path``: ``OME-TIFF``, ``CZI``, ``OpenSlide:<vendor>`` (a whole-slide
    format), ``TIFF``, ``BigTIFF``, ``PNG``, ``JPEG``, or None when it is none of them.

    Order: the first bytes; a TIFF whose first ImageDescription is OME-XML is OME-TIFF; a TIFF,
    JPEG or unknown file that OpenSlide recognises (other than as a generic tiled TIFF; e.g. a
    3DHISTECH ``.mrxs`` with its data folder) is a whole-slide format.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    kind = magic_format(path)
    if kind in ("TIFF", "BigTIFF"):
        if _is_ome_tiff(path):
            return "OME-TIFF"
        vendor = openslide_vendor(path)
        return f"OpenSlide:{vendor}" if vendor else kind
    if kind in (None, "JPEG"):  # a 3DHISTECH .mrxs starts like a JPEG; Hamamatsu .vms is text
        vendor = openslide_vendor(path)
        return f"OpenSlide:{vendor}" if vendor else kind
    return kind
