"""Tile geometry: every output pixel is produced exactly once, padding mirrors the image."""

import itertools

import numpy as np
import pytest

from core.geometry import GeometryError, TileGeometry
from worker.engine.tiling import TileGrid, crop_strip, cut_tiles, pad_strip, place_cores

SIZES = [(1, 1), (5, 3), (31, 64), (64, 64), (100, 37), (129, 257), (256, 96), (300, 301)]


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("tile,halo,k", [(64, 16, 1), (64, 0, 2), (96, 32, 3), (128, 48, 1)])
def test_every_output_pixel_covered_exactly_once(width, height, tile, halo, k):
    grid = TileGrid(width, height, TileGeometry(tile, halo), rows_per_task=k)
    cover = np.zeros((height, width), dtype=np.int32)
    bounds = grid.all_strip_bounds()
    assert bounds[0][0] == 0 and bounds[-1][1] == height
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    for y0, y1 in bounds:
        origins = grid.tile_origins(y0, y1)
        rows, cols = grid.padded_strip_shape(y0, y1)
        out = np.zeros((rows - 2 * halo, cols - 2 * halo), dtype=np.int32)
        for y, x in origins:
            assert y + tile <= rows and x + tile <= cols  # every tile lies inside the padding
            out[y : y + grid.stride, x : x + grid.stride] += 1
        assert (out == 1).all()  # cores tile the padded output without gaps or overlaps
        cover[y0:y1] += crop_strip(out, grid, y0, y1)
    assert (cover == 1).all()


def test_grid_counts():
    grid = TileGrid(1000, 700, TileGeometry(512, 64), rows_per_task=2)
    assert grid.stride == 384
    assert grid.n_cols == 3 and grid.n_tile_rows == 2 and grid.n_strips == 1
    assert grid.strip_bounds(0) == (0, 700)
    with pytest.raises(GeometryError):
        grid.strip_bounds(1)


@pytest.mark.parametrize("bad", [dict(width=0, height=5), dict(width=5, height=5, rows_per_task=0)])
def test_bad_grid_raises(bad):
    args = dict(width=10, height=10, geometry=TileGeometry(64, 16)) | bad
    with pytest.raises(GeometryError):
        TileGrid(**args)


@pytest.mark.parametrize("width,height", [(50, 41), (7, 300), (200, 3), (2, 2)])
def test_padded_strips_equal_globally_reflected_image(width, height):
    """Cutting each strip's window and padding it equals padding the whole image once."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    grid = TileGrid(width, height, TileGeometry(64, 16))
    for y0, y1 in grid.all_strip_bounds():
        r0, r1 = grid.read_window(y0, y1)
        padded = pad_strip(image[r0:r1], grid, y0, y1)
        rows, cols = grid.padded_strip_shape(y0, y1)
        assert padded.shape == (rows, cols, 3)
        # reference: reflect the whole image, then take the same window
        big = np.pad(image, [(64, 64), (16, cols), (0, 0)], mode="reflect" if min(height, width) > 1 else "edge")
        if height > 16 and width > 16:  # single reflections only: identical by construction
            ref = big[64 + y0 - 16 : 64 + y0 - 16 + rows, :cols]
            np.testing.assert_array_equal(padded[: min(rows, r1 - y0 + 16)], ref[: min(rows, r1 - y0 + 16)])
        # the core of the padded strip is the image itself
        np.testing.assert_array_equal(padded[16 : 16 + y1 - y0, 16 : 16 + width], image[y0:y1])


def test_place_cores_reassembles_identity_prediction():
    """With an identity 'model' (prediction = input channel 0), tiling returns the image."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (77, 130, 1), dtype=np.uint8)
    grid = TileGrid(130, 77, TileGeometry(64, 16), rows_per_task=2)
    out_rows = []
    for y0, y1 in grid.all_strip_bounds():
        r0, r1 = grid.read_window(y0, y1)
        padded = pad_strip(image[r0:r1], grid, y0, y1)
        origins = grid.tile_origins(y0, y1)
        tiles = cut_tiles(padded, origins, 64)
        assert tiles.shape == (len(origins), 64, 64, 1)
        rows, cols = grid.padded_strip_shape(y0, y1)
        out = np.zeros((rows - 32, cols - 32), np.uint8)
        place_cores(out, tiles[..., 0], origins, 16)
        out_rows.append(crop_strip(out, grid, y0, y1))
    np.testing.assert_array_equal(np.concatenate(out_rows), image[..., 0])


def test_pad_strip_rejects_wrong_region():
    grid = TileGrid(40, 40, TileGeometry(64, 16))
    with pytest.raises(GeometryError):
        pad_strip(np.zeros((5, 40, 3), np.uint8), grid, 0, 32)
