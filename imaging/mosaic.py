"""Mosaics: a large test image built from the sample micrographs shipped in
``imaging/samples`` (NASA EBC, MIT licence), for ``pelletseg demo`` and ``pelletseg bench``.

The mosaic is a lazy libvips pipeline (a grid of flipped/rotated views of a few small
in-memory source tiles) streamed to a tiled BigTIFF, so 1000-Mpx mosaics need no more
memory than 100-Mpx ones.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import pyvips

from imaging.errors import ImageFormatError, vips_text
from imaging.reading import to_rgb8

__all__ = ["SAMPLES", "build_mosaic", "demo_folders", "demo_sources"]

#: The shipped sample micrographs (NASA EBC, MIT licence: ``samples/LICENSE.txt``).
SAMPLES = Path(__file__).resolve().parent / "samples"
TILE = 256


def demo_folders(home: Path) -> list[Path]:
    """Where demo images lie: ``{home}/demo`` (``pelletseg demo``'s mosaics) and the shipped
    samples (:data:`SAMPLES`); the demo model's labels of them mean what it was trained for
    (:func:`models.suitability.demo_model_warning`)."""
    return [Path(home) / "demo", SAMPLES]


def demo_sources() -> list[Path]:
    """The sample micrographs shipped in ``imaging/samples/`` (``*.png``), sorted by name."""
    return sorted(SAMPLES.glob("*.png"))


def _transform(image: pyvips.Image, op: int) -> pyvips.Image:
    """One of the 8 symmetries of a square: op // 2 quarter turns, then a flip if op is odd."""
    turns = op // 2 % 4
    if turns:
        image = image.rot(("d90", "d180", "d270")[turns - 1])
    if op % 2:
        image = image.fliphor()
    return image


def build_mosaic(
    sources: Sequence[str | Path],
    mpx: float,
    out_path: str | Path,
    seed: int = 0,
    *,
    compression: str = "jpeg",
) -> tuple[int, int]:
    """Build a roughly square mosaic of about ``mpx`` megapixels from real micrographs.

    Each source is converted to 8-bit RGB and cropped to a common square cell (the smallest
    side among the sources). The grid cycles through the sources from a seeded per-row
    offset and gives each cell one of the 8 flips/rotations of the square, chosen from
    ``seed``, so repeats are less obvious; the grid is cropped to ``side x side`` with
    ``side = round(sqrt(mpx * 1e6))`` and streamed to a tiled (256 px) BigTIFF.

    Args:
        sources: Micrographs (PNG/JPEG/TIFF; grey, RGB, with or without alpha; 8 or 16 bit).
        mpx: Target size in megapixels (> 0).
        out_path: Output TIFF; overwritten if it exists.
        seed: Seed of the cell order and transforms; equal seeds give identical mosaics.
        compression: ``"jpeg"`` (Q 90) or ``"deflate"``.

    Returns:
        (width, height) of the written mosaic in pixels.

    Raises:
        ValueError: no sources, ``mpx <= 0`` or an unknown compression.
        ImageFormatError: a source cannot be read or converted to 8-bit RGB.
    """
    if not sources:
        raise ValueError("build_mosaic needs at least one source image")
    if not mpx > 0:
        raise ValueError(f"mpx must be > 0, got {mpx}")
    if compression not in ("jpeg", "deflate"):
        raise ValueError(f"compression must be 'jpeg' or 'deflate', got {compression!r}")
    tiles = []
    for path in sources:
        try:
            image = pyvips.Image.new_from_file(str(path))
        except pyvips.Error as e:
            raise ImageFormatError(f"{path}: cannot be read as an image: {vips_text(e)}") from e
        tiles.append(to_rgb8(image))
    cell = min(min(t.width, t.height) for t in tiles)
    # Sources are small: decode each once into memory; every cell is a view of one of them.
    tiles = [t.crop(0, 0, cell, cell).copy_memory() for t in tiles]

    side = max(1, round(math.sqrt(mpx * 1e6)))
    n = math.ceil(side / cell)
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        offset = rng.randrange(len(tiles))
        cells = [_transform(tiles[(offset + c) % len(tiles)], rng.randrange(8)) for c in range(n)]
        rows.append(cells[0] if n == 1 else pyvips.Image.arrayjoin(cells, across=n))
    mosaic = rows[0] if n == 1 else pyvips.Image.arrayjoin(rows, across=1)
    mosaic = mosaic.crop(0, 0, side, side).copy(interpretation="srgb")
    options = {"Q": 90} if compression == "jpeg" else {"predictor": "horizontal"}
    mosaic.tiffsave(
        str(out_path),
        tile=True,
        tile_width=TILE,
        tile_height=TILE,
        bigtiff=True,
        compression=compression,
        keep="none",
        **options,
    )
    return side, side
