"""Seam-free tiling: on real micrographs, tiled inference (default geometry) equals one
forward pass of the whole image on >= 99.9 % of pixels, with the bundled trained model."""

from __future__ import annotations

import pytest

from imaging.reading import open_image, read_rows
from models.registry import MODEL_ZOO
from tests.worker.conftest import DEMO_DATA
from worker.engine.segmenter import Segmenter


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter(MODEL_ZOO / "ebc-unet-mnv2" / "1", device="cpu", threads=2)


def _agreement(segmenter, image) -> float:
    tiled = segmenter.segment_array(image)  # at the package's geometry, as jobs run it
    # The reference sees the image borders reflect-padded by the halo, as the tiles do, so
    # what is compared is the effect of the seams, not of zero padding inside the network.
    single = segmenter.segment_single_pass(image, pad=segmenter.package.halo)
    assert tiled.shape == single.shape == image.shape[:2]
    return float((tiled == single).mean())


@pytest.mark.parametrize("name", ["040617-2_S12720015.png", "050317-3_S0440016.png"])
def test_tiled_equals_single_pass_on_sem_micrographs(segmenter, name):
    image = read_rows(open_image(DEMO_DATA / name, max_pixels=10**9), 0, 1024)
    assert segmenter.package.geometry.stride < 1024  # the image really has seams
    assert _agreement(segmenter, image) >= 0.999


def test_tiled_equals_single_pass_on_an_optical_ore_micrograph(segmenter, shared_data):
    src = open_image(shared_data / "lumenstone-s2" / "images" / "val" / "01.jpg", max_pixels=10**9)
    image = read_rows(src, 0, 2048)[:, :2048]  # 3 x 3 tiles of the default geometry
    assert _agreement(segmenter, image) >= 0.999
