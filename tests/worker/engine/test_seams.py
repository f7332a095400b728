"""Seam-free tiling: on real micrographs, tiled inference at the model package's geometry
equals one forward pass of the whole image on >= 99.9 % of pixels, with the bundled trained
model served as a CPU worker serves it (OpenVINO, float32), the criterion its geometry was
chosen by (docs/performance.md, "Tile geometry"), with fitted edge tiles (a new job's layout)
and whole ones (a job's of spec version < 4)."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.reading import open_image, read_rows
from models.registry import MODEL_ZOO
from tests.worker.conftest import DEMO_DATA
from worker.engine.segmenter import Segmenter


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    # OpenVINO in float32, the CPU's serving runtime (its labels equal eager float32's:
    # tests/worker/engine/test_runtimes.py), at half eager's time for these whole-image passes
    return Segmenter(MODEL_ZOO / "ebc-unet-mnv2" / "1", device="cpu", threads=2,
                     runtime="openvino", cpu_precision="f32")


def _agreement(segmenter, image, fit_edges: bool) -> float:
    grid = segmenter.grid(image.shape[1], image.shape[0], fit_edges=fit_edges)
    assert grid.n_cols > 1 and grid.n_tile_rows > 1  # the image really has seams
    # at the package's geometry, as jobs run it
    tiled = segmenter.segment_array(image, fit_edges=fit_edges)
    # The reference sees the image's edges reflect-padded by the grid's edge padding, as the
    # tiles do, so what is compared is the effect of the seams, not of what lies past the edge.
    pad = grid.edge_pad_px
    single = segmenter.segment_single_pass(image, pad=pad)
    assert tiled.shape == single.shape == image.shape[:2]
    return float((tiled == single).mean())


def _read(path, rows: int | None = None) -> np.ndarray:
    image = open_image(path, max_pixels=10**9)
    return read_rows(image, 0, rows or image.height)


def test_tiled_equals_single_pass_on_sem_micrographs(segmenter):
    # the four bundled 1024 px SEM images side by side: 2048 x 2048 px, seams inside images;
    # whole edge tiles (2 x 2 tiles of 1728 px)
    four = [_read(DEMO_DATA / name, 1024)[:, :1024] for name in sorted(
        p.name for p in DEMO_DATA.glob("*.png"))]
    mosaic = np.concatenate([np.concatenate(four[:2], axis=1), np.concatenate(four[2:], axis=1)])
    assert _agreement(segmenter, mosaic, fit_edges=False) >= 0.999


def test_tiled_equals_single_pass_on_an_optical_ore_micrograph(segmenter, shared_data):
    image = _read(shared_data / "lumenstone-s2" / "images" / "val" / "01.jpg")  # 3396 x 2547
    # 3 x 2 tiles, the last column fitted to its 324 px (544 px wide); the last tile row keeps
    # 1011 px, so a whole tile
    assert _agreement(segmenter, image, fit_edges=True) >= 0.999
