"""Tiling: a :class:`core.geometry.TileGeometry` laid over one image, as pure functions on
shapes and small arrays (no I/O).

Overlap-tile strategy (Ronneberger et al., "U-Net", MICCAI 2015): the model sees tiles of
T x T px; only the central core of ``stride = T - 2*halo`` px is kept, so every output pixel
is predicted with at least ``halo`` px of context where the image has it. Cores are laid
``stride`` px apart from the image's top-left corner, so they cover the image without gaps or
overlaps; the last core of an axis is cut at the image's edge.

What a tile shows past the image's edge is the *edge padding* (README, "Glossary"): the image
is reflect-padded (numpy ``mode="reflect"``, mirrored without repeating the edge pixel) by
``edge_pad`` px (0 <= edge_pad <= halo) on every side, and every tile is shifted inward until it
lies inside the padded image ([-edge_pad, n + edge_pad) on an axis of n px; a tile shifted from
the far edge stops on the first tile's ``unit`` lattice, so it may show up to ``unit - 1`` px
more); its kept pixels stay its core, cut to the image, so they keep at least ``halo`` px of
real context where the image has it. An axis whose padded length fits one tile gets a single,
shorter tile: the padded length rounded up to the side unit the network takes (``unit``), so
an image smaller than a tile is labelled in one pass with ``edge_pad`` px around it. With
``fit_edges`` (the layout of jobs since job spec version 4) the last tile of an axis of
several tiles is *fitted* the same way where that saves at least half a tile
(:data:`MAX_FIT`): only as long as its core, the ``halo`` above it and the edge padding past
the image need, rounded up to the unit (a 20,000 px axis at 1728 / 96 px: 13 tiles of 1728 px
and one of 224 px for the last 32 px, not 14 of 1728 px), so the model's work follows the
image's size instead of whole tiles; no tile is larger than the tile size, and every kept
pixel keeps its ``halo`` of context as every core's does. Mirrored
pixels are context a model trained on crops of images never saw: before this layout (tiles
every stride px from -halo, the strip reflect-padded to whole tiles) a 3396 x 2547 px image
at a 4096 / 512 px geometry was cut into two tiles holding twice as many mirrored pixels as
image pixels (docs/models.md, run 39).

Coordinates are (row y, column x) in px of the full image. A *tile row* is one row of tiles
(``stride`` output rows, fewer for the last); a *row* (the unit of work and checkpoint) is
``rows_per_task`` tile rows, and its *strip* the output rows ``[y0, y1)`` it produces; the
*band* of a tile
row is the input rows its tiles are cut from, padded left and right to the columns the
tiles span (README, "Glossary").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from core.geometry import TILE_MULTIPLE, GeometryError, TileGeometry

__all__ = ["MAX_FIT", "Span", "TileGrid", "axis_cores", "axis_spans", "band_row_sources",
           "band_tile", "check_region", "cut_tiles", "iter_batches", "pad_columns",
           "place_tiles", "reflect_index", "strip_bands"]

#: The longest fitted edge tile, as a share of the tile size; a longer one stays a whole tile.
#: Each new tile shape costs a compiled model and its activation memory on OpenVINO (a
#: 1728 px tile's: ~480 MiB; worker.engine.runtimes.MAX_COMPILED_SHAPES), so a shape is only
#: worth it where it saves at least half a tile: fitting every edge tile took a worker on a
#: 7644 px square image from 1.61 to 2.03 GiB peak RSS and made it slower (docs/performance.md,
#: "Fitted edge tiles").
MAX_FIT = 0.5


@dataclass(frozen=True)
class Span:
    """One tile's extent along one axis of the image (px, image coordinates).

    Attributes:
        start: First image px the tile shows (< 0: the edge padding, mirrored).
        size: Px the tile spans (the tile size, or less for an axis's single tile).
        keep0, keep1: Image px ``[keep0, keep1)`` labelled from this tile (its core, cut to
            the image).
    """

    start: int
    size: int
    keep0: int
    keep1: int

    @property
    def end(self) -> int:
        """One past the last image px the tile shows."""
        return self.start + self.size


def axis_cores(n: int, stride: int) -> tuple[tuple[int, int], ...]:
    """The tile cores along an axis of ``n`` px: ``[k * stride, min((k + 1) * stride, n))``
    for k = 0 .. ceil(n / stride) - 1 (the last one cut at the image's edge).

    Returns:
        ``[(keep0, keep1), ...]`` in order; they partition ``[0, n)``.
    """
    return tuple((k * stride, min((k + 1) * stride, n)) for k in range(math.ceil(n / stride)))


def axis_spans(n: int, geometry: TileGeometry, edge_pad: int, unit: int,
               max_single: int | None = None, fit: bool = False) -> tuple[Span, ...]:
    """The tiles along one image axis of ``n`` px (module docstring): one tile of the padded
    length ``n + 2 * edge_pad`` rounded up to ``unit`` where that is at most the tile size (and
    ``n`` at most ``max_single``), else one tile per core of :func:`axis_cores`, each shifted
    inward into ``[-edge_pad, n + edge_pad)`` (from the far edge only as far as the lattice
    ``-edge_pad + m * unit`` of the first tile's start allows). Every tile has the tile size;
    with ``fit`` the last one only what its core, the ``halo`` above it and the edge padding
    past the image need, rounded up to ``unit``, where that is at most :data:`MAX_FIT` of the
    tile size.

    Args:
        n: Axis length (px, >= 1).
        geometry: Tile size and halo.
        edge_pad: Mirrored px past each edge (0 <= edge_pad <= halo).
        unit: Tile sides are multiples of this (px): the side unit the network takes.
        max_single: The longest axis one tile may keep whole (px; the rows of one strip,
            so that a tile never feeds two strips); None: no limit.
        fit: Fit the last tile to its core where that halves it or more (a fitted edge
            tile).

    Returns:
        The spans in order; their ``[keep0, keep1)`` partition ``[0, n)``.
    """
    t, h, s, b = geometry.tile_size, geometry.halo, geometry.stride, edge_pad
    side = _round_up(n + 2 * b, unit)
    if side <= t and (max_single is None or n <= max_single):
        return (Span(-b, side, 0, n),)
    cores = axis_cores(n, s)
    spans = []
    for keep0, keep1 in cores:
        size = t
        if fit and keep1 == n:
            need = _round_up(n + b - max(keep0 - h, -b), unit)
            size = need if need <= MAX_FIT * t else t
        # a tile shifted left from the far edge starts on the first tile's lattice
        # (-b + m * unit), so the network's downsampling sees the image in the same phase in
        # every tile (off it, the bundled model's labels of a LumenStone image differed from a
        # whole-image pass on 0.6 % of the pixels, on it on < 0.1 %:
        # tests/worker/engine/test_seams.py)
        hi = -b + _round_up(n + 2 * b - size, unit)
        spans.append(Span(max(-b, min(keep0 - h, hi)), size, keep0, keep1))
    return tuple(spans)


def _round_up(n: int, unit: int) -> int:
    """``n`` rounded up to a multiple of ``unit`` (any int ``n``)."""
    return -(-n // unit) * unit


@dataclass(frozen=True)
class TileGrid:
    """Tiling of a ``height`` x ``width`` px image into strips and tiles.

    Attributes:
        width, height: Image size (px).
        geometry: Tile size and halo (validated by :class:`core.geometry.TileGeometry`).
        rows_per_task: Tile rows per row (the unit of work); its strip is
            ``rows_per_task * stride`` output rows (the last strip fewer).
        edge_pad: Mirrored px a tile may show past the image's edge (0..halo); None: the halo.
            A model package's ``edge_pad`` (:class:`models.package.ModelPackage`).
        unit: Tile sides are multiples of this (px, a multiple of 32): 32 / input scale
            for a reduced model (:meth:`worker.engine.segmenter.Segmenter.grid`).
        fit_edges: Fit the last tile of each axis to its core (module docstring), so that
            edge tiles are shorter than the tile size (:meth:`tile_shape_at`). A job spec's
            ``edge_tiles`` (version 4).

    Raises (on construction):
        GeometryError: an image smaller than 1 x 1 px, ``rows_per_task`` < 1, an edge_pad
            outside 0..halo, or a unit that is not a positive multiple of 32 px dividing the
            tile size.
    """

    width: int
    height: int
    geometry: TileGeometry
    rows_per_task: int = 1
    edge_pad: int | None = None
    unit: int = TILE_MULTIPLE
    fit_edges: bool = False

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise GeometryError(f"image must be at least 1 x 1 px, got {self.width} x {self.height}")
        if self.rows_per_task < 1:
            raise GeometryError(f"rows_per_task must be >= 1, got {self.rows_per_task}")
        if self.edge_pad is not None and not 0 <= self.edge_pad <= self.halo:
            raise GeometryError(f"edge_pad must be 0..{self.halo} px (the halo), "
                                f"got {self.edge_pad}")
        if self.unit < TILE_MULTIPLE or self.unit % TILE_MULTIPLE or self.tile_size % self.unit:
            raise GeometryError(f"unit must be a multiple of {TILE_MULTIPLE} px dividing the "
                                f"tile size {self.tile_size}, got {self.unit}")

    @property
    def tile_size(self) -> int:
        """Tile edge T fed to the model (px); an axis with a single tile may use less."""
        return self.geometry.tile_size

    @property
    def halo(self) -> int:
        """Context kept on each side of a tile's core (px)."""
        return self.geometry.halo

    @property
    def stride(self) -> int:
        """Core edge of a tile = distance between cores (px)."""
        return self.geometry.stride

    @property
    def edge_pad_px(self) -> int:
        """Mirrored px a tile may show past the image's edge: ``edge_pad``, else the halo."""
        return self.halo if self.edge_pad is None else self.edge_pad

    @cached_property
    def col_spans(self) -> tuple[Span, ...]:
        """The tile columns (:func:`axis_spans` over the width)."""
        return axis_spans(self.width, self.geometry, self.edge_pad_px, self.unit,
                          fit=self.fit_edges)

    @cached_property
    def row_spans(self) -> tuple[Span, ...]:
        """The tile rows of the image (:func:`axis_spans` over the height), top to bottom."""
        return axis_spans(self.height, self.geometry, self.edge_pad_px, self.unit,
                          max_single=self.strip_bounds(0)[1], fit=self.fit_edges)

    def tile_shape_at(self, row: Span, col: int) -> tuple[int, int]:
        """(rows, cols) px of the tile of tile row ``row`` (a span of :attr:`row_spans`) and
        column ``col``: the tile size on both axes but where an axis has a single shorter
        tile or a fitted edge tile."""
        return row.size, self.col_spans[col].size

    @property
    def tile_pixels(self) -> int:
        """Pixels the model is fed for the whole image (px): every tile's rows x columns,
        summed (the tile rows' sizes times the tile columns'); / (width x height) is the
        image's overlap cost."""
        return sum(r.size for r in self.row_spans) * sum(c.size for c in self.col_spans)

    @property
    def n_cols(self) -> int:
        """Tiles per tile row."""
        return len(self.col_spans)

    @property
    def n_tile_rows(self) -> int:
        """Tile rows in the image."""
        return len(self.row_spans)

    @cached_property
    def _strips(self) -> tuple[tuple[int, int], ...]:
        cores = axis_cores(self.height, self.stride)
        k = self.rows_per_task
        return tuple((cores[i][0], cores[min(i + k, len(cores)) - 1][1])
                     for i in range(0, len(cores), k))

    @property
    def n_strips(self) -> int:
        """Row records (strips) in the image."""
        return len(self._strips)

    def strip_bounds(self, index: int) -> tuple[int, int]:
        """Output image rows ``[y0, y1)`` of strip ``index``: ``rows_per_task`` tile rows'
        cores (:func:`axis_cores` over the height), fewer in the last strip.

        Raises:
            GeometryError: ``index`` is outside ``0 .. n_strips - 1``.
        """
        if not 0 <= index < self.n_strips:
            raise GeometryError(f"strip {index} outside 0..{self.n_strips - 1}")
        return self._strips[index]

    def all_strip_bounds(self) -> list[tuple[int, int]]:
        """``[(y0, y1), ...]`` of every strip, top to bottom; they partition ``[0, height)``."""
        return list(self._strips)

    def strip_spans(self, y0: int, y1: int) -> tuple[Span, ...]:
        """The tile rows whose kept rows lie in output rows ``[y0, y1)`` (a strip's), top to
        bottom; their ``[keep0, keep1)`` partition ``[y0, y1)``.

        Raises:
            GeometryError: ``[y0, y1)`` is not a strip's rows (not on tile rows' cores).
        """
        spans = tuple(s for s in self.row_spans if y0 <= s.keep0 < y1)
        if not spans or spans[0].keep0 != y0 or spans[-1].keep1 != y1:
            raise GeometryError(f"output rows [{y0}, {y1}) are not whole tile rows of the grid")
        return spans

    def read_window(self, y0: int, y1: int) -> tuple[int, int]:
        """Image rows ``[r0, r1)`` to read for output rows ``[y0, y1)``: every row the strip's
        tile rows show, in the image or mirrored (:func:`band_row_sources`)."""
        sources = band_row_sources(self, y0, y1)
        return min(int(r.min()) for r in sources), max(int(r.max()) for r in sources) + 1

    def strip_tiles(self, y0: int, y1: int) -> list[tuple[int, int]]:
        """(tile row j in the strip, column i) of every tile of output rows ``[y0, y1)``,
        row-major."""
        n_rows = len(self.strip_spans(y0, y1))
        return [(j, i) for j in range(n_rows) for i in range(self.n_cols)]

    @property
    def band_width(self) -> int:
        """Columns of a band: the image's width plus the edge padding the tiles show (px)."""
        return self.col_spans[-1].end - self.col_spans[0].start


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """The image px shown at positions ``index`` (any ints) of an axis of ``n`` px mirrored
    as numpy's ``pad(mode="reflect")`` mirrors it (period ``2 * (n - 1)``, the edge pixel
    not repeated); an axis of one px shows it everywhere (``mode="edge"``).

    Returns:
        int64 array of ``index``'s shape, in ``[0, n)``.
    """
    index = np.asarray(index, dtype=np.int64)
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    m = np.mod(index, period)
    return np.where(m < n, m, period - m)


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


def band_row_sources(grid: TileGrid, y0: int, y1: int) -> list[np.ndarray]:
    """Image rows of the input *band* of each tile row of a strip: the rows
    ``[start, end)`` of its span, mirrored into the image (:func:`reflect_index`).

    Returns:
        One (tile rows,) int64 array of image rows per tile row, top to bottom.
    """
    return [reflect_index(np.arange(s.start, s.end), grid.height)
            for s in grid.strip_spans(y0, y1)]


def pad_columns(rows: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Reflect-pad full-width image rows left and right to the columns the tiles span.

    Args:
        rows: (h, W, C) rows of the image (any dtype), full width ``grid.width``.

    Returns:
        (h, ``grid.band_width``, C) array; column j is image column
        ``j + grid.col_spans[0].start``, mirrored at the image's edges.

    Raises:
        GeometryError: ``rows`` is not ``grid.width`` px wide.
    """
    if rows.shape[1] != grid.width:
        raise GeometryError(f"rows are {rows.shape[1]} px wide, expected {grid.width} px")
    left, right = -grid.col_spans[0].start, grid.col_spans[-1].end - grid.width
    pad_rest = [(0, 0)] * (rows.ndim - 2)
    return np.pad(rows, [(0, 0), (left, right), *pad_rest], mode=_pad_mode(grid.width))


def strip_bands(region: np.ndarray, grid: TileGrid, y0: int, y1: int) -> list[np.ndarray]:
    """The input bands of a strip's tile rows, from its region in memory (the reference of
    :func:`worker.engine.prefetch.iter_bands`, which reads them row by row).

    Args:
        region: (r1 - r0, W, C) image rows ``grid.read_window(y0, y1)``, any dtype.

    Returns:
        One (tile rows, ``grid.band_width``, C) array per tile row, top to bottom.

    Raises:
        GeometryError: ``region`` does not have the rows and width the grid expects.
    """
    r0, _ = check_region(region, grid, y0, y1)
    return [pad_columns(region[sources - r0], grid)
            for sources in band_row_sources(grid, y0, y1)]


def iter_batches(tiles: list, batch_size: int, grid: TileGrid,
                 spans: Sequence[Span]) -> Iterator[list]:
    """Split a strip's tiles (:meth:`TileGrid.strip_tiles`, whose tile rows are the strip's
    ``spans``, :meth:`TileGrid.strip_spans`) into consecutive batches of at most
    ``batch_size`` tiles of one shape (:meth:`TileGrid.tile_shape_at`: fitted edge tiles make
    batches of their own)."""
    batch: list = []
    shape = None
    for tile in tiles:
        here = grid.tile_shape_at(spans[tile[0]], tile[1])
        if batch and (len(batch) == batch_size or here != shape):
            yield batch
            batch = []
        batch.append(tile)
        shape = here
    if batch:
        yield batch


def cut_tiles(bands: list[np.ndarray], tiles: list[tuple[int, int]], grid: TileGrid
              ) -> np.ndarray:
    """Stack the tiles ``(j, i)`` (:meth:`TileGrid.strip_tiles`) of a strip's bands.

    Args:
        bands: The strip's bands (:func:`strip_bands`), or a dict tile row -> band.

    Returns:
        (N, rows, cols, C) array of the tiles' shape (:meth:`TileGrid.tile_shape_at`; the
        tiles of one batch share it, :func:`iter_batches`), the bands' dtype.
    """
    return np.stack([band_tile(bands[j], grid, i) for j, i in tiles])


def band_tile(band: np.ndarray, grid: TileGrid, i: int) -> np.ndarray:
    """Tile column ``i`` of a band (a view): its (rows, cols, C) pixels."""
    span, left = grid.col_spans[i], grid.col_spans[0].start
    return band[:, span.start - left : span.end - left]


def place_tiles(out: np.ndarray, preds: np.ndarray, tiles: list[tuple[int, int]],
                grid: TileGrid, y0: int, y1: int) -> None:
    """Write the kept pixels of tile predictions into a strip's output, in place.

    Args:
        out: (y1 - y0, W) output strip of output rows ``[y0, y1)``.
        preds: (N, rows, cols) per-tile predictions (labels or confidence) aligned with
            ``tiles``.
        tiles: (tile row j in the strip, column i) of each prediction.
    """
    spans = grid.strip_spans(y0, y1)
    for (j, i), pred in zip(tiles, preds, strict=True):
        r, c = spans[j], grid.col_spans[i]
        out[r.keep0 - y0 : r.keep1 - y0, c.keep0 : c.keep1] = pred[
            r.keep0 - r.start : r.keep1 - r.start, c.keep0 - c.start : c.keep1 - c.start]
