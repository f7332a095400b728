"""Tile geometry: every output pixel is produced exactly once, tiles stay inside the image
and its edge_pad, and what a tile shows past the edge mirrors the image."""

import itertools

import numpy as np
import pytest

from core.geometry import GeometryError, TileGeometry
from worker.engine.tiling import (
    TileGrid,
    axis_cores,
    axis_spans,
    cut_tiles,
    iter_batches,
    place_tiles,
    reflect_index,
    strip_bands,
)

SIZES = [(1, 1), (5, 3), (31, 64), (64, 64), (100, 37), (129, 257), (256, 96), (300, 301)]
GEOMETRIES = [(64, 16, 1), (64, 0, 2), (96, 32, 3), (128, 48, 1)]


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("tile,halo,k", GEOMETRIES)
@pytest.mark.parametrize("edge_pad", [None, 0, 8])
@pytest.mark.parametrize("fit", [False, True])
def test_every_output_pixel_covered_exactly_once(width, height, tile, halo, k, edge_pad, fit):
    edge_pad = None if edge_pad is None else min(edge_pad, halo)
    grid = TileGrid(width, height, TileGeometry(tile, halo), rows_per_task=k, edge_pad=edge_pad,
                    fit_edges=fit)
    cover = np.zeros((height, width), dtype=np.int32)
    bounds = grid.all_strip_bounds()
    assert bounds[0][0] == 0 and bounds[-1][1] == height
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    for y0, y1 in bounds:
        spans = grid.strip_spans(y0, y1)
        for j, i in grid.strip_tiles(y0, y1):
            r, c = spans[j], grid.col_spans[i]
            cover[r.keep0 : r.keep1, c.keep0 : c.keep1] += 1
    assert (cover == 1).all()


@pytest.mark.parametrize("n", [1, 2, 17, 32, 33, 63, 64, 65, 100, 200, 257, 1000])
@pytest.mark.parametrize("tile,halo", [(64, 16), (96, 32), (128, 48), (64, 0)])
@pytest.mark.parametrize("pad_share", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("unit", [32, "tile"])
@pytest.mark.parametrize("fit", [False, True])
def test_tiles_stay_inside_the_border_and_keep_their_context(n, tile, halo, pad_share,
                                                             unit, fit):
    geometry = TileGeometry(tile, halo)
    unit = tile if unit == "tile" else unit
    b = round(halo * pad_share)
    spans = axis_spans(n, geometry, b, unit, fit=fit)
    assert spans[0].keep0 == 0 and spans[-1].keep1 == n
    assert all(a.keep1 == c.keep0 for a, c in itertools.pairwise(spans))
    assert all(s.keep0 == k * geometry.stride for k, s in enumerate(spans))
    if len(spans) == 1:  # one tile: the image and its edge_pad, rounded up to the unit
        (s,) = spans
        assert s.start == -b and s.size % unit == 0 and n + 2 * b <= s.size <= tile
        assert s.size - unit < n + 2 * b
        return
    assert [(s.keep0, s.keep1) for s in spans] == list(axis_cores(n, geometry.stride))
    for s in spans:
        # never past the edge padding, but for a tile shifted from the far edge onto the
        # first tile's unit lattice
        assert -b <= s.start and s.end <= n + b + unit - 1
        if fit and s is spans[-1]:  # fitted: its core, the halo above, the edge padding
            need = -(-(n + b - max(s.keep0 - halo, -b)) // unit) * unit
            assert s.size == (need if need <= tile / 2 else tile) and s.end >= n + b
        else:
            assert s.size == tile
        if s.start != s.keep0 - halo:
            assert (s.start + b) % unit == 0
        assert s.start <= s.keep0 and s.keep1 <= s.end
        # every kept px has the halo of context, or all the image (and edge_pad) there is
        assert s.keep0 - s.start >= min(halo, s.keep0 + b)
        assert s.end - s.keep1 >= min(halo, n - s.keep1 + b)


def test_border_halo_keeps_the_classic_overlap_tile_layout_inside_the_image():
    """Away from the image's right and bottom edge the tiles are the overlap-tile strategy's:
    tile k shows [k * stride - halo, k * stride + stride + halo)."""
    g = TileGeometry(512, 64)
    spans = axis_spans(2000, g, 64, 32)
    assert [s.start for s in spans[:-1]] == [k * g.stride - 64 for k in range(len(spans) - 1)]
    assert spans[-1].start == 1568  # shifted inward from 1856, stopped on -64 + m * 32 px


def test_an_image_smaller_than_a_tile_is_one_shorter_tile():
    grid = TileGrid(3396, 2547, TileGeometry(4096, 512), edge_pad=64, unit=256)
    assert grid.n_cols == 1 and grid.n_tile_rows == 1
    assert grid.tile_shape_at(grid.row_spans[0], 0) == (2816, 3584)  # 2547 + 128 and 3396 + 128, up to 256 px
    assert grid.read_window(0, 2547) == (0, 2547)
    # with the whole halo as edge_pad it still fits one tile across
    whole_halo = TileGrid(3396, 2547, TileGeometry(4096, 512), unit=256)
    assert whole_halo.tile_shape_at(whole_halo.row_spans[0], 0) == (3584, 4096)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_reflect_index_mirrors_like_numpy_pad(n):
    idx = np.arange(-200, 200 + n)
    expected = np.pad(np.arange(n), (200, 200), mode="reflect" if n > 1 else "edge")
    np.testing.assert_array_equal(reflect_index(idx, n), expected)


@pytest.mark.parametrize("width,height", [(50, 41), (7, 300), (200, 3), (2, 2), (1, 1)])
@pytest.mark.parametrize("edge_pad", [None, 0, 5])
@pytest.mark.parametrize("fit", [False, True])
def test_strip_bands_are_windows_of_the_globally_mirrored_image(width, height, edge_pad,
                                                                 fit):
    """Each band equals the same window of the whole image mirrored once by numpy."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    grid = TileGrid(width, height, TileGeometry(64, 16), rows_per_task=2, edge_pad=edge_pad,
                    fit_edges=fit)
    pad = 400
    big = np.pad(image, [(pad, pad), (pad, pad), (0, 0)],
                 mode="reflect" if min(height, width) > 1 else "edge")
    if height == 1 or width == 1:  # numpy pads an axis of one px by its edge
        big = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode="edge")
    x0 = grid.col_spans[0].start
    for y0, y1 in grid.all_strip_bounds():
        r0, r1 = grid.read_window(y0, y1)
        bands = strip_bands(image[r0:r1], grid, y0, y1)
        for band, s in zip(bands, grid.strip_spans(y0, y1), strict=True):
            assert band.shape == (s.size, grid.band_width, 3)
            np.testing.assert_array_equal(
                band, big[pad + s.start : pad + s.end, pad + x0 : pad + x0 + grid.band_width])


@pytest.mark.parametrize("edge_pad", [None, 0, 16])
@pytest.mark.parametrize("size,fit", [((200, 290), False), ((200, 290), True),
                                      ((192, 288), True)])
def test_placing_tiles_of_an_identity_model_returns_the_image(edge_pad, size, fit):
    """With an identity 'model' (prediction = input channel 0), tiling returns the image;
    batches hold tiles of one shape (a fitted edge tile's own), each as the grid says."""
    width, height = size
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (height, width, 1), dtype=np.uint8)
    grid = TileGrid(width, height, TileGeometry(128, 16), rows_per_task=2, edge_pad=edge_pad,
                    fit_edges=fit)
    out_rows, shapes = [], set()
    for y0, y1 in grid.all_strip_bounds():
        r0, r1 = grid.read_window(y0, y1)
        bands = strip_bands(image[r0:r1], grid, y0, y1)
        spans = grid.strip_spans(y0, y1)
        out = np.zeros((y1 - y0, width), np.uint8)
        for batch in iter_batches(grid.strip_tiles(y0, y1), 3, grid, spans):
            stack = cut_tiles(bands, batch, grid)
            shape = grid.tile_shape_at(spans[batch[0][0]], batch[0][1])
            assert stack.shape == (len(batch), *shape, 1)
            shapes.add(shape)
            place_tiles(out, stack[..., 0], batch, grid, y0, y1)
        out_rows.append(out)
    np.testing.assert_array_equal(np.concatenate(out_rows), image[..., 0])
    assert shapes == {(r.size, c.size) for r in grid.row_spans for c in grid.col_spans}
    # 200 x 290 px at stride 96: a last column of 8 px and a last tile row of 2 px, each fitted
    # to its core, the halo and the edge padding (64 or 32 px: 4 shapes); 192 x 288 px is whole
    # strides (1 shape)
    assert len(shapes) == (4 if fit and size == (200, 290) else 1)


def test_fitted_edge_tiles_are_as_long_as_their_core_needs():
    """The brief's 20,000 x 17,000 px section at 1728 / 96 px: 14 x 12 tiles as before, the
    last column 224 px wide (32 px + 96 + 96) and the last tile row 320 px tall (104 + 192, up
    to 32), instead of whole 1728 px tiles."""
    g = TileGeometry(1728, 96)
    whole = TileGrid(20000, 17000, g)
    grid = TileGrid(20000, 17000, g, fit_edges=True)
    assert (grid.n_cols, grid.n_tile_rows) == (whole.n_cols, whole.n_tile_rows) == (14, 12)
    assert grid.all_strip_bounds() == whole.all_strip_bounds()  # rows are planned alike
    last = grid.col_spans[-1]
    assert (last.keep0, last.keep1, last.start, last.size, last.end) == (
        19968, 20000, 19872, 224, 20096)
    assert grid.row_spans[-1].size == 320
    assert grid.tile_shape_at(grid.row_spans[-1], 13) == (320, 224)
    assert [s.size for s in grid.col_spans[:-1]] == [1728] * 13
    assert grid.tile_pixels == (13 * 1728 + 224) * (11 * 1728 + 320)
    assert whole.tile_pixels == 14 * 12 * 1728**2
    # a remainder of a whole stride keeps a whole tile, and so does one whose fitted tile would
    # be over half a tile: 672 px + 192 fit 864 px, 673 px do not
    exact = TileGrid(6144, 6144, g, fit_edges=True)
    assert exact.col_spans == TileGrid(6144, 6144, g).col_spans
    assert TileGrid(6144 + 672, 10, g, fit_edges=True).col_spans[-1].size == 864
    assert TileGrid(6144 + 673, 10, g, fit_edges=True).col_spans[-1].size == 1728


def test_grid_counts():
    grid = TileGrid(1000, 700, TileGeometry(512, 64), rows_per_task=2)
    assert grid.stride == 384
    assert grid.n_cols == 3 and grid.n_tile_rows == 2 and grid.n_strips == 1
    assert grid.strip_bounds(0) == (0, 700)
    with pytest.raises(GeometryError):
        grid.strip_bounds(1)
    with pytest.raises(GeometryError, match="whole tile rows"):
        grid.strip_spans(10, 700)


@pytest.mark.parametrize("bad", [dict(width=0, height=5), dict(width=5, height=5, rows_per_task=0),
                                 dict(edge_pad=17), dict(edge_pad=-1), dict(unit=48),
                                 dict(unit=128)])
def test_bad_grid_raises(bad):
    args = dict(width=10, height=10, geometry=TileGeometry(64, 16)) | bad
    with pytest.raises(GeometryError):
        TileGrid(**args)


def test_strip_bands_rejects_a_wrong_region():
    grid = TileGrid(40, 40, TileGeometry(64, 16))
    with pytest.raises(GeometryError):
        strip_bands(np.zeros((5, 40, 3), np.uint8), grid, 0, 40)
