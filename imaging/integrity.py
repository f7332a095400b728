"""Damaged images never yield a result: how sources are decoded, and what a decode error says.

libvips decodes source pixels with ``fail_on="warning"``: a tile or strip that libtiff, libjpeg
or libpng cannot read completely (a file cut short, a tile offset past the end of the file,
compressed data overwritten with noise) is an error, never silently zero or grey pixels.
Measured on libvips 8.18 (tests/imaging/test_damaged.py): with the default
``fail_on="none"``/``"truncated"``/``"error"`` a tiled TIFF missing half its tile data, or with
noise over compressed tiles, decodes "successfully"; with ``"warning"`` every such case fails,
while intact files (private TIFF tags included) still read.

One damage libtiff cannot see: noise inside a deflate-compressed tile or strip that still
inflates to the expected number of bytes (libtiff stops once its buffer is full and never
reaches the stream's Adler-32 checksum, RFC 1950 section 2.2). :func:`check_deflate_rows` inflates
the raw tiles/strips of the rows read with :mod:`zlib` to the end of each stream, so the
checksum is verified; it runs before libvips decodes those rows (one extra inflate, about
0.5 ms per 256 x 256 RGB tile).
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyvips

__all__ = ["FAIL_ON", "DeflateDamage", "check_deflate_rows", "damaged_message", "decode_detail",
           "is_tiff_page0"]

#: TIFF Compression tag values of deflate (zlib stream with an Adler-32 checksum).
_DEFLATE = (8, 32946)

#: libvips ``fail_on`` level used for every source read (see the module docstring).
FAIL_ON = "warning"

_WHERE = re.compile(r"(tile \d+|scanline \d+|strip \d+|row \d+)", re.IGNORECASE)


def decode_detail(error: pyvips.Error | Exception) -> str:
    """The most telling line of a libvips decode error: the first one naming a tile, strip,
    scanline or row (e.g. ``tiff2vips: Read error at row 256, col 256, tile 7; got 48931
    bytes, expected 49163``), else the first non-generic line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for line in lines:
        if _WHERE.search(line):
            return line[:300]
    generic = ("unable to write to memory", "unable to call", "unable to load from file")
    for line in lines:
        if not line.startswith(generic):
            return line[:300]
    return lines[0][:300] if lines else "unknown error"


#: libtiff's words for a compression it was built without (``tif_codec.c``): ``"ZSTD
#: compression support is not configured"``, ``"Compression scheme 34712 tile decoding is not
#: implemented"``.
_NO_CODEC = re.compile(r"(\w[\w -]*?) compression support is not configured"
                       r"|Compression scheme (\d+) \w* ?decoding is not implemented")


def _compression_name(code: int) -> str:
    """``JPEG2000`` for 34712: tifffile's name of a TIFF ``Compression`` value, else the
    number."""
    import tifffile

    try:
        return tifffile.COMPRESSION(code).name
    except ValueError:
        return f"compression {code}"


#: libjpeg's words for a JPEG of a sample precision it was built without (12-bit JPEGs of
#: some scientific cameras): ``"Unsupported JPEG data precision 12"``.
_JPEG_PRECISION = re.compile(r"Unsupported JPEG data precision (\d+)")


def damaged_message(name: str, where: str, error: Exception) -> str:
    """An error message for pixel data that cannot be decoded: the file, where (rows/tile),
    libvips' detail and what to do. Pixels compressed in a scheme libtiff was built without
    (JPEG 2000, JPEG XL, ZSTD, ...) and JPEGs of more than 8 bits per sample are said to be
    that, not damage, with the way out."""
    found = _NO_CODEC.search(str(error))
    if found:
        scheme = found.group(1) or _compression_name(int(found.group(2)))
        code = f" (TIFF compression {found.group(2)})" if found.group(2) else ""
        return (f"{name}, {where}: its pixels are compressed with {scheme}{code}, which this "
                "installation's TIFF reader (libtiff, in libvips) cannot decode; the file "
                "need not be damaged: save it again uncompressed or with LZW or deflate (zip) "
                "compression (Fiji: File > Save As > Tiff; bfconvert: -compression LZW) and "
                "submit that")
    found = _JPEG_PRECISION.search(str(error))
    if found:
        return (f"{name}, {where}: a JPEG of {found.group(1)} bits per sample, which this "
                "installation's JPEG reader (libjpeg, in libvips) cannot decode; the file need "
                "not be damaged: save it as a 16-bit TIFF or PNG (Fiji: File > Save As > Tiff) "
                "and submit that")
    return (f"{name}, {where}: pixel data cannot be decoded ({decode_detail(error)}); the file "
            "is truncated or corrupt, and no result is made from it: check the file (e.g. its "
            "size against the original) and upload it again")


class DeflateDamage(ValueError):
    """A deflate tile or strip failed to inflate or its Adler-32 checksum did not match."""


@dataclass(frozen=True)
class _Chunks:
    """Where page ``page``'s compressed tiles/strips lie: ``offsets``/``counts`` (bytes) in
    TIFF order (plane, chunk row, chunk column), ``rows`` px per chunk row."""

    rows: int
    across: int
    down: int
    offsets: np.ndarray
    counts: np.ndarray
    tiled: bool


@lru_cache(maxsize=16)
def _deflate_chunks(path: str, page: int, _size: int, _mtime_ns: int) -> _Chunks | None:
    """Chunk layout of a deflate-compressed TIFF page, None for any other file or compression
    (keyed by size and mtime too, so a replaced file is parsed again)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            p = tif.pages[page]
            if int(p.compression) not in _DEFLATE:
                return None
            tiled = bool(p.is_tiled)
            rows = p.tilelength if tiled else min(p.rowsperstrip or p.imagelength,
                                                  p.imagelength)
            across = -(-p.imagewidth // p.tilewidth) if tiled else 1
            return _Chunks(rows, across, -(-p.imagelength // rows),
                           np.asarray(p.dataoffsets, dtype=np.int64),
                           np.asarray(p.databytecounts, dtype=np.int64), tiled)
    except (tifffile.TiffFileError, IndexError, ValueError, OSError, AttributeError):
        return None  # not a TIFF tifffile parses: libvips' own checks decide


def check_deflate_rows(path: str | os.PathLike, r0: int, r1: int, page: int = 0) -> None:
    """Inflate every deflate tile/strip of TIFF ``page`` that covers image rows ``[r0, r1)``
    to the end of its zlib stream, so its Adler-32 checksum (RFC 1950) is verified. Files
    that are not deflate-compressed TIFFs pass without being read.

    Args:
        path: The source file.
        r0, r1: Image rows (px), ``0 <= r0 < r1``.
        page: TIFF page (IFD) index that libvips reads (0 unless a page was chosen).

    Raises:
        DeflateDamage: a chunk is cut short (its bytes past the end of the file), does not
            inflate, or fails its checksum; the message names the chunk and its rows.
    """
    path = os.fspath(path)
    st = os.stat(path)
    chunks = _deflate_chunks(path, page, st.st_size, st.st_mtime_ns)
    if chunks is None:
        return
    per_plane = chunks.across * chunks.down
    planes = max(1, len(chunks.offsets) // per_plane)
    first, last = r0 // chunks.rows, min((r1 - 1) // chunks.rows, chunks.down - 1)
    kind = "tile" if chunks.tiled else "strip"
    with open(path, "rb") as f:
        for plane in range(planes):
            for down in range(first, last + 1):
                for col in range(chunks.across):
                    i = plane * per_plane + down * chunks.across + col
                    offset, count = int(chunks.offsets[i]), int(chunks.counts[i])
                    if count == 0:
                        continue  # a sparse chunk: libvips' own checks decide
                    f.seek(offset)
                    data = f.read(count)
                    rows = f"rows {down * chunks.rows}-{(down + 1) * chunks.rows}"
                    if len(data) != count:
                        raise DeflateDamage(f"{kind} {i} ({rows}) is cut short: {len(data)} "
                                            f"of {count} bytes in the file")
                    try:
                        zlib.decompress(data)
                    except zlib.error as e:
                        raise DeflateDamage(f"{kind} {i} ({rows}) does not inflate: {e}") from e


def is_tiff_page0(image: pyvips.Image) -> str | None:
    """The file name of ``image`` if libvips' TIFF loader opened it, else None (images from
    :func:`imaging.reading.open_image` are page 0)."""
    loader = image.get("vips-loader") if image.get_typeof("vips-loader") else ""
    if loader != "tiffload" or not image.get_typeof("filename"):
        return None
    name = image.get("filename")  # an image made from a loaded one may keep its loader's name
    return name if os.path.isfile(name) else None

