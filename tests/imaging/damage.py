"""Test helper: deflate noise that libvips decodes without an error (the damage only the
checksums of imaging/integrity.py catch)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pyvips
import tifffile


def noise_libvips_decodes(path: Path, write: Callable[[], None], *, page: int = 0,
                          chunk: int = 1, n: int = 16, tries: int = 40) -> None:
    """Write the intact file (``write()``), then overwrite ``n`` bytes inside deflate tile or
    strip ``chunk`` of TIFF ``page`` with noise, moving the patch until libvips
    (``fail_on="warning"``) decodes that page anyway.

    Raises:
        AssertionError: no such patch within ``tries`` positions.
    """
    for k in range(tries):
        write()
        with tifffile.TiffFile(path) as tif:
            offset = tif.pages[page].dataoffsets[chunk]
            count = tif.pages[page].databytecounts[chunk]
        data = bytearray(path.read_bytes())
        at = offset + count // 2 + 7 * k
        data[at:at + n] = random.Random(k).randbytes(n)
        path.write_bytes(bytes(data))
        try:
            pyvips.Image.new_from_file(str(path), page=page, fail_on="warning").numpy()
            return
        except pyvips.Error:
            continue
    raise AssertionError(f"no noise patch in {path.name} that libvips decodes was found")
