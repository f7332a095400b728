"""Demo mosaic built from the shipped NASA EBC micrographs (imaging.mosaic)."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import pyvips

from imaging.mosaic import SAMPLES as DEMO_DATA
from imaging.mosaic import build_mosaic, demo_sources


def _pixels(path) -> np.ndarray:
    return pyvips.Image.new_from_file(str(path)).numpy()


def _symmetries(a: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(a, k)
        out += [r, r[:, ::-1]]
    return out


def test_demo_sources_are_the_shipped_images():
    sources = demo_sources()
    assert len(sources) == 4
    assert all(p.suffix == ".png" and p.parent == DEMO_DATA for p in sources)
    assert (DEMO_DATA / "LICENSE.txt").is_file()
    assert "Stuckner" in (DEMO_DATA / "README.md").read_text()


def test_mosaic_size_tiling_and_reproducibility(tmp_path):
    sources = demo_sources()
    a, b, c = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"
    width, height = build_mosaic(sources, 0.5, a, seed=7)
    image = pyvips.Image.new_from_file(str(a))
    assert (image.width, image.height) == (width, height)
    assert image.bands == 3 and image.format == "uchar"
    cell = min(pyvips.Image.new_from_file(str(p)).width for p in sources)
    assert abs(width * height - 0.5e6) <= 2 * cell * math.sqrt(0.5e6)  # within one tile
    assert abs(width - height) <= 1
    with PIL.Image.open(a) as im:
        assert im.tag_v2[322] == 256 and im.tag_v2[323] == 256  # TileWidth, TileLength
    build_mosaic(sources, 0.5, b, seed=7)
    np.testing.assert_array_equal(_pixels(a), _pixels(b))
    build_mosaic(sources, 0.5, c, seed=8)
    assert not np.array_equal(_pixels(a), _pixels(c))


def test_mosaic_cells_are_flipped_or_rotated_sources(tmp_path):
    sources = demo_sources()
    originals = [_pixels(p) for p in sources]
    cell = min(min(o.shape[:2]) for o in originals)
    crops = [o[:cell, :cell] for o in originals]
    out = tmp_path / "m.tif"
    side, _ = build_mosaic(sources, (1.5 * cell) ** 2 / 1e6, out, seed=3, compression="deflate")
    mosaic = _pixels(out)
    assert mosaic.shape == (side, side, 3)
    # the top-left cell is whole; the others are cropped at the right and bottom edges
    for y0, x0 in [(0, 0), (0, cell), (cell, 0), (cell, cell)]:
        got = mosaic[y0 : y0 + cell, x0 : x0 + cell]
        h, w = got.shape[:2]
        assert any(np.array_equal(got, t[:h, :w]) for crop in crops for t in _symmetries(crop)), (
            f"cell at {(y0, x0)} is not a transformed source"
        )
    # cells are not all the same transform of the same source
    assert not np.array_equal(
        mosaic[: cell // 2, : cell // 2], mosaic[cell : cell + cell // 2, : cell // 2]
    )


def test_mosaic_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        build_mosaic([], 1.0, tmp_path / "x.tif")
    with pytest.raises(ValueError):
        build_mosaic(demo_sources(), 0, tmp_path / "x.tif")
    with pytest.raises(ValueError):
        build_mosaic(demo_sources(), 1.0, tmp_path / "x.tif", compression="lzw")
