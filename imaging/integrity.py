"""Damaged images never yield a result: how sources are decoded, and what a decode error says.

libvips decodes source pixels with ``fail_on="warning"``: a tile or strip that libtiff, libjpeg
or libpng cannot read completely (a file cut short, a tile offset past the end of the file,
compressed data overwritten with noise) is an error, never silently zero or grey pixels.
Measured on libvips 8.18 (tests/imaging/test_damaged.py): with the default
``fail_on="none"``/``"truncated"``/``"error"`` a tiled TIFF missing half its tile data, or with
noise over compressed tiles, decodes "successfully"; with ``"warning"`` every such case fails,
while intact files (private TIFF tags included) still read.
"""

from __future__ import annotations

import re

import pyvips

__all__ = ["FAIL_ON", "damaged_message", "decode_detail"]

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


def damaged_message(name: str, where: str, error: Exception) -> str:
    """An error message for damaged pixel data: the file, where (rows/tile), libvips' detail
    and what to do."""
    return (f"{name}, {where}: pixel data cannot be decoded ({decode_detail(error)}); the file "
            "is truncated or corrupt, and no result is made from it: check the file (e.g. its "
            "size against the original) and upload it again")
