"""Tiling: a :class:`core.geometry.TileGeometry` laid over one image, as pure functions on
shapes and small arrays (no I/O).

Overlap-tile strategy (Ronneberger et al., "U-Net", MICCAI 2015): the model sees tiles of
T x T px; only the central core of ``stride = T - 2*halo`` px is kept, so every output pixel
is predicted with at least ``halo`` px of context. Outside the image the input is
reflect-padded (numpy ``mode="reflect"``, i.e. mirrored without repeating the edge pixel).

Coordinates are (row y, column x) in px of the full image. A *tile row* is one row of tiles
(``stride`` output rows); a *row* (the unit of work and checkpoint) is ``rows_per_task``
tile rows, and its *strip* the output rows ``[y0, y1)`` it produces; the *band* of a tile
row is the T input rows its tiles are cut from (README, "Glossary").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.geometry import GeometryError, TileGeometry

__all__ = ["TileGrid", "band_row_sources", "check_region", "crop_strip", "cut_tiles", "iter_batches",
           "pad_columns", "pad_strip", "padded_row_sources", "place_cores"]


@dataclass(frozen=True)
class TileGrid:
    """Tiling of a ``height`` x ``width`` px image into strips and tiles.

    Attributes:
        width, height: Image size (px).
        geometry: Tile size and halo (validated by :class:`core.geometry.TileGeometry`).
        rows_per_task: Tile rows per row (the unit of work); its strip is
            ``rows_per_task * stride`` output rows.

    Raises (on construction):
        GeometryError: an image smaller than 1 x 1 px, or ``rows_per_task`` < 1.
    """

    width: int
    height: int
    geometry: TileGeometry
    rows_per_task: int = 1

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise GeometryError(f"image must be at least 1 x 1 px, got {self.width} x {self.height}")
        if self.rows_per_task < 1:
            raise GeometryError(f"rows_per_task must be >= 1, got {self.rows_per_task}")

    @property
    def tile_size(self) -> int:
        """Tile edge T fed to the model (px)."""
        return self.geometry.tile_size

    @property
    def halo(self) -> int:
        """Context kept on each side of a tile and cropped after inference (px)."""
        return self.geometry.halo

    @property
    def stride(self) -> int:
        """Core edge of a tile = distance between tile origins (px)."""
        return self.geometry.stride

    @property
    def n_cols(self) -> int:
        """Tiles per tile row."""
        return math.ceil(self.width / self.stride)

    @property
    def n_tile_rows(self) -> int:
        """Tile rows in the image."""
        return math.ceil(self.height / self.stride)

    @property
    def strip_height(self) -> int:
        """Output rows of a full strip: ``rows_per_task * stride`` (px)."""
        return self.rows_per_task * self.stride

    @property
    def n_strips(self) -> int:
        """Row records (strips) in the image."""
        return math.ceil(self.height / self.strip_height)

    def strip_bounds(self, index: int) -> tuple[int, int]:
        """Output image rows ``[y0, y1)`` of strip ``index``.

        Raises:
            GeometryError: ``index`` is outside ``0 .. n_strips - 1``.
        """
        if not 0 <= index < self.n_strips:
            raise GeometryError(f"strip {index} outside 0..{self.n_strips - 1}")
        y0 = index * self.strip_height
        return y0, min(self.height, y0 + self.strip_height)

    def all_strip_bounds(self) -> list[tuple[int, int]]:
        """``[(y0, y1), ...]`` of every strip, top to bottom; they partition ``[0, height)``."""
        return [self.strip_bounds(i) for i in range(self.n_strips)]

    def read_window(self, y0: int, y1: int) -> tuple[int, int]:
        """Image rows ``[r0, r1)`` to read for output rows ``[y0, y1)``: the strip plus its
        halo, clipped to the image (the rest is reflect-padded)."""
        return max(0, y0 - self.halo), min(self.height, y1 + self.halo)

    def padded_strip_shape(self, y0: int, y1: int) -> tuple[int, int]:
        """(rows, cols) of the padded model input for output rows ``[y0, y1)``: whole tiles
        of cores plus the halo on every side (px)."""
        n_rows = math.ceil((y1 - y0) / self.stride)
        return n_rows * self.stride + 2 * self.halo, self.n_cols * self.stride + 2 * self.halo

    def tile_origins(self, y0: int, y1: int) -> list[tuple[int, int]]:
        """Top-left corners (row, col) of the T x T input tiles in the padded strip of output
        rows ``[y0, y1)``, row-major. The core of tile (ty, tx) lands at output (ty, tx) of
        the strip, i.e. image rows ``y0 + ty .. y0 + ty + stride``."""
        n_rows = math.ceil((y1 - y0) / self.stride)
        return [
            (i * self.stride, j * self.stride) for i in range(n_rows) for j in range(self.n_cols)
        ]


def _pad_mode(length: int) -> str:
    # numpy cannot reflect an axis of one pixel; an edge copy is the only sensible fill.
    return "reflect" if length > 1 else "edge"


def check_region(region: np.ndarray, grid: TileGrid, y0: int, y1: int) -> tuple[int, int]:
    """Check that ``region`` holds the image rows ``grid.read_window(y0, y1)`` at full width.

    Args:
        region: (r1 - r0, W, C) image rows, any dtype.

    Returns:
        ``(r0, r1)``, the image rows it holds (px).

    Raises:
        GeometryError: ``region`` does not have the rows and width the grid expects.
    """
    r0, r1 = grid.read_window(y0, y1)
    if region.shape[0] != r1 - r0 or region.shape[1] != grid.width:
        raise GeometryError(
            f"region is {region.shape[0]} x {region.shape[1]} px, expected "
            f"{r1 - r0} x {grid.width} px for output rows [{y0}, {y1})"
        )
    return r0, r1


def pad_strip(region: np.ndarray, grid: TileGrid, y0: int, y1: int) -> np.ndarray:
    """Reflect-pad an image region to the padded strip the tiles are cut from.

    Args:
        region: (r1 - r0, W, C) image rows ``grid.read_window(y0, y1)``, any dtype.
        grid: The image's tile grid.
        y0, y1: Output rows of the strip (px).

    Returns:
        (rows, cols, C) array of shape ``grid.padded_strip_shape(y0, y1)``; pixel (i, j) is
        image pixel (y0 - halo + i, j - halo), mirrored at the image borders.

    Raises:
        GeometryError: ``region`` does not have the rows and width the grid expects.
    """
    r0, _ = check_region(region, grid, y0, y1)
    rows, _ = grid.padded_strip_shape(y0, y1)
    top = grid.halo - (y0 - r0)
    bottom = rows - top - region.shape[0]
    pad_rest = [(0, 0)] * (region.ndim - 2)
    out = np.pad(region, [(top, bottom), (0, 0), *pad_rest], mode=_pad_mode(region.shape[0]))
    return pad_columns(out, grid)


def pad_columns(rows: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Reflect-pad full-width image rows left and right to the padded strip's width, exactly
    as :func:`pad_strip` pads its columns.

    Args:
        rows: (h, W, C) rows of the image (any dtype), full width ``grid.width``.

    Returns:
        (h, n_cols * stride + 2 * halo, C) array; column j is image column ``j - halo``,
        mirrored at the image borders.

    Raises:
        GeometryError: ``rows`` is not ``grid.width`` px wide.
    """
    if rows.shape[1] != grid.width:
        raise GeometryError(f"rows are {rows.shape[1]} px wide, expected {grid.width} px")
    cols = grid.n_cols * grid.stride + 2 * grid.halo
    pad_rest = [(0, 0)] * (rows.ndim - 2)
    return np.pad(
        rows, [(0, 0), (grid.halo, cols - grid.halo - grid.width), *pad_rest],
        mode=_pad_mode(grid.width),
    )


def padded_row_sources(grid: TileGrid, y0: int, y1: int) -> np.ndarray:
    """Image row shown by each row of the padded strip of output rows ``[y0, y1)``.

    The same reflect/edge padding as :func:`pad_strip`, applied to row numbers instead of
    pixels, so ``pad_strip(region, ...)[i] == pad_columns(image[sources[i]])`` for every i,
    including images shorter than the halo (where numpy reflects more than once).

    Returns:
        (padded rows,) int64 image rows, in ``[0, height)``.
    """
    r0, r1 = grid.read_window(y0, y1)
    rows, _ = grid.padded_strip_shape(y0, y1)
    top = grid.halo - (y0 - r0)
    bottom = rows - top - (r1 - r0)
    return np.pad(np.arange(r0, r1, dtype=np.int64), (top, bottom), mode=_pad_mode(r1 - r0))


def band_row_sources(grid: TileGrid, y0: int, y1: int) -> list[np.ndarray]:
    """Image rows of the input *band* of each tile row of a strip: band ``j`` is rows
    ``[j * stride, j * stride + T)`` of the padded strip, the rows every tile of tile row
    ``j`` is cut from (consecutive bands share ``2 * halo`` rows).

    Returns:
        One (T,) int64 array of image rows per tile row, top to bottom.
    """
    sources = padded_row_sources(grid, y0, y1)
    n_rows = math.ceil((y1 - y0) / grid.stride)
    return [
        sources[j * grid.stride : j * grid.stride + grid.tile_size] for j in range(n_rows)
    ]


def iter_batches(origins: list[tuple[int, int]], batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """Split tile origins into consecutive batches of at most ``batch_size``."""
    for i in range(0, len(origins), batch_size):
        yield origins[i : i + batch_size]


def cut_tiles(padded: np.ndarray, origins: list[tuple[int, int]], tile_size: int) -> np.ndarray:
    """Stack the T x T tiles at ``origins`` of a padded strip.

    Args:
        padded: (rows, cols, C) padded strip.
        origins: Tile top-left corners in ``padded`` (px).
        tile_size: T (px).

    Returns:
        (N, T, T, C) array, same dtype as ``padded``.
    """
    return np.stack([padded[y : y + tile_size, x : x + tile_size] for y, x in origins])


def place_cores(
    out: np.ndarray, preds: np.ndarray, origins: list[tuple[int, int]], halo: int
) -> None:
    """Write the central cores of tile predictions into the strip's output, in place.

    Args:
        out: (n_rows * stride, n_cols * stride) output strip (before cropping to the image).
        preds: (N, T, T) per-tile predictions (labels) aligned with ``origins``.
        origins: Tile corners in the padded strip; the core of a tile at (y, x) goes to
            ``out[y : y + stride, x : x + stride]`` (the halo shift and the padding cancel).
        halo: Rows/columns cropped from each side of a prediction (px).
    """
    tile = preds.shape[-1]
    stride = tile - 2 * halo
    for (y, x), pred in zip(origins, preds, strict=True):
        out[y : y + stride, x : x + stride] = pred[halo : halo + stride, halo : halo + stride]


def crop_strip(out: np.ndarray, grid: TileGrid, y0: int, y1: int) -> np.ndarray:
    """Crop an assembled output strip to the image: (y1 - y0, width)."""
    return out[: y1 - y0, : grid.width]
