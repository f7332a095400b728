"""Deep Zoom tiles read from pyramidal TIFFs (the dashboard's image viewer).

Geometry follows the Deep Zoom Image (DZI) format that OpenSeadragon reads natively
(Microsoft, "Deep Zoom File Format Overview"): level ``max_level = ceil(log2(max(W, H)))``
holds the full image, each lower level halves it (``ceil(W / 2**(max_level - level))`` px
wide), down to 1 x 1 px at level 0; a level is cut into ``dz_tile_size`` px *Deep Zoom tiles*
(viewer tiles, not the model's tiles), and each tile also carries ``overlap`` px of its
neighbours on every interior side.

Pixels come from the pyramidal TIFFs the reducer writes (OME-TIFF with SubIFD levels, or the
one-page-per-level files of earlier releases, both read by :func:`imaging.ome.pyramid_levels`:
level ``k`` is level 0 halved ``k`` times, floor-rounded, down to one TIFF tile): a tile is read
from the page with the largest power-of-two downsample not above the level's, so a read never
decodes more than about one tile of pixels, except on the few levels below the smallest page
(at most one small page). Label maps are never interpolated: below the pyramid they are
subsampled (nearest neighbour) and coloured with the model's palette; images are shrunk by
box averaging. Confidence maps (1-band uint8 ``round(255 p)``) are averaged like images and
coloured with :data:`CONFIDENCE_STOPS` (PNG).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pyvips

from imaging.ome import pyramid_levels
from imaging.palette import palette_lut

#: Edge of a Deep Zoom tile (px); equal to the TIFF tile size of the outputs, so a tile read
#: at a pyramid page's own scale touches at most four TIFF tiles.
DZ_TILE_SIZE = 256
#: Pixels each tile shares with its neighbours (the DZI default; hides seams when the viewer
#: draws tiles at fractional zoom).
OVERLAP = 1
JPEG_QUALITY = 85
DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"


class TileError(ValueError):
    """A tile request outside the image's Deep Zoom grid (unknown level, column or row)."""


class PixelKind(StrEnum):
    """What a pyramid holds, which decides how it is resampled and encoded."""

    #: 8-bit sRGB picture (source, overlay): box-averaged, served as JPEG.
    IMAGE = "image"
    #: 1-band uint8 class indices: subsampled, coloured with a palette, served as PNG.
    LABELS = "labels"
    #: 1-band uint8 confidence: averaged, coloured with :data:`CONFIDENCE_STOPS`, PNG.
    CONFIDENCE = "confidence"


#: Tile file extension (and DZI ``Format``) of each kind.
TILE_FORMAT = {PixelKind.IMAGE: "jpeg", PixelKind.LABELS: "png", PixelKind.CONFIDENCE: "png"}
#: Colours of the confidence layer: (stored value, RGB), linearly interpolated between; red
#: for p = 0, pale yellow at p = 0.5 (below it is *low*), blue for p = 1 (ColorBrewer RdYlBu).
CONFIDENCE_STOPS = ((0, (215, 48, 39)), (128, (255, 255, 191)), (255, (69, 117, 180)))


def confidence_lut() -> pyvips.Image:
    """(256 x 1) 3-band uchar lookup table of :data:`CONFIDENCE_STOPS` for ``maplut``."""
    values = [s[0] for s in CONFIDENCE_STOPS]
    rows = []
    for v in range(256):
        k = max(i for i, x in enumerate(values) if x <= v)
        if k == len(values) - 1:
            rows.append(list(CONFIDENCE_STOPS[k][1]))
            continue
        (v0, c0), (v1, c1) = CONFIDENCE_STOPS[k], CONFIDENCE_STOPS[k + 1]
        t = (v - v0) / (v1 - v0)
        rows.append([round(a + t * (b - a)) for a, b in zip(c0, c1, strict=True)])
    return palette_lut(rows)
MEDIA_TYPE = {"jpeg": "image/jpeg", "png": "image/png"}


@dataclass(frozen=True)
class DeepZoomGrid:
    """The Deep Zoom tile grid of a ``width`` x ``height`` px image (pure arithmetic)."""

    width: int
    height: int
    dz_tile_size: int = DZ_TILE_SIZE
    overlap: int = OVERLAP

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size {self.width}x{self.height} px must be at least 1x1")
        if self.dz_tile_size < 1 or not 0 <= self.overlap < self.dz_tile_size:
            raise ValueError(
                f"tile size {self.dz_tile_size} px and overlap {self.overlap} px: need "
                "dz_tile_size >= 1 and 0 <= overlap < dz_tile_size"
            )

    @property
    def max_level(self) -> int:
        """Index of the full-resolution level: ``ceil(log2(max(width, height)))``."""
        return (max(self.width, self.height) - 1).bit_length()

    def downsample(self, level: int) -> int:
        """Image px per level px at ``level``: ``2 ** (max_level - level)``.

        Raises:
            TileError: ``level`` is not in ``[0, max_level]``.
        """
        if not 0 <= level <= self.max_level:
            raise TileError(f"level {level} is outside 0..{self.max_level}")
        return 1 << (self.max_level - level)

    def level_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of ``level`` in px (ceil-rounded halvings of the image)."""
        s = self.downsample(level)
        return -(-self.width // s), -(-self.height // s)

    def tile_count(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of tiles at ``level``."""
        w, h = self.level_size(level)
        return -(-w // self.dz_tile_size), -(-h // self.dz_tile_size)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` in ``level`` px of tile ``(col, row)``, overlap included.

        Raises:
            TileError: the level, column or row is outside the grid.
        """
        cols, rows = self.tile_count(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileError(
                f"tile {col}_{row} is outside level {level}'s {cols} x {rows} tiles"
            )
        lw, lh = self.level_size(level)
        x0 = max(0, col * self.dz_tile_size - self.overlap)
        y0 = max(0, row * self.dz_tile_size - self.overlap)
        x1 = min(lw, (col + 1) * self.dz_tile_size + self.overlap)
        y1 = min(lh, (row + 1) * self.dz_tile_size + self.overlap)
        return x0, y0, x1 - x0, y1 - y0

    def dzi_xml(self, tile_format: str) -> str:
        """The ``.dzi`` descriptor of this grid, tiles in ``tile_format`` (``jpeg``, ``png``)."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="{DZI_NAMESPACE}" TileSize="{self.dz_tile_size}" '
            f'Overlap="{self.overlap}" Format={quoteattr(tile_format)}>'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )


class Pyramid:
    """A pyramidal TIFF opened for random access (thread-safe: every read makes a new
    lazy libvips image over the shared pages).

    Args:
        path: Local TIFF file (page 0 full resolution; other pages power-of-two halvings).
        kind: What the pixels are (:class:`PixelKind`).

    Raises:
        pyvips.Error: the file cannot be opened.
        ValueError: a label or confidence pyramid that is not 1-band uint8, or an image
            that is not 3-band 8-bit.
    """

    def __init__(self, path: str | os.PathLike, kind: PixelKind):
        self.path = Path(path)
        self.kind = kind
        levels = pyramid_levels(path)  # SubIFD levels (OME-TIFF outputs) or pages (older files)
        first = levels[0][1]
        self.width, self.height = first.width, first.height
        want = (3, "uchar") if kind == PixelKind.IMAGE else (1, "uchar")
        if (first.bands, first.format) != want:
            raise ValueError(
                f"{path}: a {kind} pyramid must be {want[0]}-band {want[1]}, got "
                f"{first.bands} band(s) of {first.format}"
            )
        #: (downsample factor, level image), factor 1 first, increasing.
        self.pages: list[tuple[int, pyvips.Image]] = levels

    @property
    def grid(self) -> DeepZoomGrid:
        """The Deep Zoom grid of this pyramid's page 0."""
        return DeepZoomGrid(self.width, self.height)

    def read(self, grid: DeepZoomGrid, level: int, col: int, row: int) -> pyvips.Image:
        """The pixels of one Deep Zoom tile (lazy): ``(h, w)`` uchar with 1 band (labels)
        or 3 bands (image), ``(x, y, w, h) = grid.tile_box(level, col, row)``.

        Raises:
            TileError: the tile is outside ``grid``.
        """
        x, y, w, h = grid.tile_box(level, col, row)
        s = grid.downsample(level)
        factor, page = next((f, p) for f, p in reversed(self.pages) if f <= s)
        r = s // factor  # level px -> page px (a power of two; 1 inside the pyramid)
        px0, py0 = min(x * r, page.width - 1), min(y * r, page.height - 1)
        px1, py1 = min((x + w) * r, page.width), min((y + h) * r, page.height)
        region = page.crop(px0, py0, max(1, px1 - px0), max(1, py1 - py0))
        if r > 1:  # a level below the smallest page
            out_w = max(1, min(w, round(region.width / r)))
            out_h = max(1, min(h, round(region.height / r)))
            if self.kind == PixelKind.LABELS:
                kernel = "nearest"  # class indices are never averaged
            else:
                kernel = "linear"
            region = region.resize(out_w / region.width, vscale=out_h / region.height,
                                   kernel=kernel)
        if (region.width, region.height) != (w, h):
            # floor-rounded pages are up to 1 px short of the ceil-rounded levels: repeat
            # the edge pixels (and trim a resize that rounded up)
            region = region.embed(0, 0, w, h, extend="copy")
        return region


def encode_tile(region: pyvips.Image, kind: PixelKind, lut: pyvips.Image | None = None) -> bytes:
    """Encode a tile read by :meth:`Pyramid.read`: JPEG (Q 85) for images, PNG of the
    palette colours for labels, PNG of :data:`CONFIDENCE_STOPS` colours for confidence.

    Raises:
        ValueError: a label tile without a lookup table (see :func:`imaging.palette.palette_lut`).
    """
    if kind == PixelKind.CONFIDENCE:
        coloured = region.maplut(_confidence_lut()).copy(interpretation="srgb")
        return coloured.write_to_buffer(".png", compression=4, keep="none")
    if kind == PixelKind.LABELS:
        if lut is None:
            raise ValueError("label tiles need a palette lookup table")
        coloured = region.maplut(lut).copy(interpretation="srgb")
        return coloured.write_to_buffer(".png", compression=4, keep="none")
    return region.copy(interpretation="srgb").write_to_buffer(
        ".jpg", Q=JPEG_QUALITY, keep="none", optimize_coding=True
    )


@lru_cache(maxsize=1)
def _confidence_lut() -> pyvips.Image:
    return confidence_lut()


@lru_cache(maxsize=64)
def _open(path: str, kind: PixelKind, mtime_ns: int, size: int) -> Pyramid:
    return Pyramid(path, kind)


def open_pyramid(path: str | os.PathLike, kind: PixelKind) -> Pyramid:
    """A :class:`Pyramid`, reused while the file is unchanged (LRU of 64 open files, keyed
    by path, modification time and size, so a rewritten file is opened afresh).

    Raises:
        FileNotFoundError: no file at ``path``.
        pyvips.Error, ValueError: as :class:`Pyramid`.
    """
    stat = os.stat(path)
    return _open(str(path), kind, stat.st_mtime_ns, stat.st_size)
