"""What kind of image a local file is, from its first bytes, so that ``pelletseg submit``
refuses a file that is not an image before uploading it (gigabytes can go up before the
worker would say so).

Recognised: TIFF and BigTIFF (which OME-TIFF, Aperio SVS, Hamamatsu NDPI, Leica SCN and
other whole-slide TIFFs are), PNG, JPEG, Zeiss CZI (``ZISRAWFILE`` segment header) and
3DHISTECH MRXS (a ``.mrxs`` file with its data folder of the same name beside it). Only the
magic bytes are read; whether the pixels decode is the worker's to find out.

A folder given where images are expected stands for the image files directly in it
(:func:`expand_folders`, by name ending: :data:`IMAGE_SUFFIXES`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from core.sources import BFCONVERT

__all__ = ["IMAGE_SUFFIXES", "SUPPORTED", "NotAnImageError", "expand_folders", "sniff"]

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


#: Name endings (lower case) of the files a folder stands for: the formats above (OME-TIFF
#: ends in .ome.tif/.ome.tiff; SVS, NDPI, SCN and BIF are TIFFs).
IMAGE_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs", ".ndpi", ".scn", ".bif", ".png",
                  ".jpg", ".jpeg", ".czi", ".mrxs")


#: Name endings of microscope formats pelletseg does not read (Olympus/Evident cellSens, Leica,
#: Nikon, Imaris, Olympus FluoView, Zeiss ZVI): a folder of them is told how to convert them.
MICROSCOPE_SUFFIXES = (".vsi", ".lif", ".nd2", ".ims", ".oib", ".oir", ".zvi")


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
    if path.is_dir():
        raise NotAnImageError(f"{path}: a folder, not an image file")
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


def expand_folders(sources: Iterable[str]) -> list[str]:
    """``sources`` in order, each local folder replaced by the image files directly in it
    (name ending in :data:`IMAGE_SUFFIXES`, any case; hidden files and subfolders left out),
    sorted by name; files and URLs as given.

    Raises:
        NotAnImageError: a folder holds no such file (the message names the folder and the
            endings looked for).
    """
    expanded: list[str] = []
    for source in sources:
        folder = Path(source)
        if "://" in source or not folder.is_dir():
            expanded.append(source)
            continue
        images = sorted(str(p) for p in folder.iterdir()
                        if p.is_file() and not p.name.startswith(".")
                        and p.name.lower().endswith(IMAGE_SUFFIXES))
        if not images:
            own = sorted({p.suffix.lower() for p in folder.iterdir()
                          if p.suffix.lower() in MICROSCOPE_SUFFIXES})
            hint = (f"; its {', '.join(own)} files are a microscope's own format: for each, "
                    f"{BFCONVERT}" if own else "")
            raise NotAnImageError(f"{folder}: a folder with no image file in it (looked for "
                                  f"{', '.join(IMAGE_SUFFIXES)}){hint}; give image files, or "
                                  "a folder of them")
        expanded += images
    return expanded
