"""What kind of image a local file is, from its first bytes, so that ``pelletseg submit``
refuses a file that is not an image before uploading it (gigabytes can go up before the
worker would say so).

Recognised: TIFF and BigTIFF (which OME-TIFF, Aperio SVS, Hamamatsu NDPI, Leica SCN and
other whole-slide TIFFs are), PNG, JPEG, Zeiss CZI (``ZISRAWFILE`` segment header) and
3DHISTECH MRXS (a ``.mrxs`` file with its data folder of the same name beside it). Only the
magic bytes are read; whether the pixels decode is the worker's to find out.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SUPPORTED", "NotAnImageError", "sniff"]

#: Leading bytes -> format.
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"ZISRAWFILE", "CZI"),
)
#: What the error message lists.
SUPPORTED = ("TIFF/BigTIFF (also OME-TIFF, SVS, NDPI, SCN), PNG, JPEG, Zeiss CZI, "
             "MRXS (.mrxs with its folder)")


class NotAnImageError(ValueError):
    """The file is missing, empty, or does not start like an image format pelletseg reads."""


def sniff(path: str | Path) -> str:
    """The format of the image at ``path``, from its first 16 bytes.

    Returns:
        ``TIFF``, ``BigTIFF``, ``PNG``, ``JPEG``, ``CZI`` or ``MRXS``.

    Raises:
        NotAnImageError: no such file, an empty file, an ``.mrxs`` without its data folder, or
            leading bytes of no supported format (the message names the file, shows the
            bytes in hex, and lists the formats read).
    """
    path = Path(path)
    if not path.is_file():
        raise NotAnImageError(f"{path}: no such file")
    if path.suffix.lower() == ".mrxs":
        folder = path.with_suffix("")
        if not (folder / "Slidedat.ini").is_file():
            raise NotAnImageError(f"{path}: an MRXS slide needs its data folder {folder}/ "
                                  "(with Slidedat.ini) beside it")
        return "MRXS"
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise NotAnImageError(f"{path}: the file is empty (0 bytes)")
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    shown = " ".join(f"{b:02x}" for b in head[:8])
    raise NotAnImageError(f"{path}: not an image (first bytes {shown}); pelletseg reads "
                          f"{SUPPORTED}")
