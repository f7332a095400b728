"""Per-pixel confidence from the segmenter: labels unchanged, uint8 max softmax probability,
cropped to the same tile cores as the labels in every path and runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.geometry import TileGeometry
from imaging.reading import open_image, read_rows
from tests.worker.conftest import DEMO_DATA
from worker.engine.prefetch import region_rows
from worker.engine.segmenter import DECIDE_ROWS, Segmenter
from worker.engine.tiling import TileGrid, cut_tiles, strip_bands


@pytest.fixture(scope="module")
def segmenter(tiny_package):
    return Segmenter(tiny_package, device="cpu", threads=1)


@pytest.fixture(scope="module")
def crop():
    src = sorted(DEMO_DATA.glob("*.png"))[1]
    return read_rows(open_image(src, max_pixels=10**9), 0, 300)[:, :410]


def test_decide_keeps_argmax_and_gives_rounded_max_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 17, 9, generator=g) * 4
    logits[0, :, 0, 0] = torch.tensor([2.0, 2.0, -1.0, -1.0, -1.0])  # a tie: argmax's choice
    labels, conf = Segmenter.decide(logits)
    assert labels.dtype == torch.uint8 and conf.dtype == torch.uint8
    assert labels.shape == conf.shape == (3, 17, 9)
    assert torch.equal(labels, logits.argmax(1).to(torch.uint8))
    p = np.exp(logits.double().numpy())
    p = p / p.sum(1, keepdims=True)
    expected = np.round(255 * p.max(1))
    assert np.abs(conf.numpy().astype(int) - expected).max() <= 1  # float32 vs float64
    assert conf.min() >= int(np.floor(255 / 5))  # max softmax >= 1 / C
    # uniform logits: p = 1/C; one huge logit: certain
    flat, sure = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    sure[:, 2] = 100.0
    assert (Segmenter.decide(flat)[1] == round(255 / 4)).all()
    assert (Segmenter.decide(sure)[1] == 255).all() and (Segmenter.decide(sure)[0] == 2).all()
    # bf16 logits (CUDA autocast) are decided in float32
    assert Segmenter.decide(logits.bfloat16())[1].dtype == torch.uint8


@pytest.mark.parametrize("height", [DECIDE_ROWS + 1, 2 * DECIDE_ROWS + 37])
def test_decide_by_blocks_of_rows_equals_one_pass(height):
    """Tall logits are decided DECIDE_ROWS rows at a time: the same labels and confidence as
    the block-free computation, last partial block and channels_last logits included."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, height, 33, generator=g) * 3
    for x in (logits, logits.contiguous(memory_format=torch.channels_last)):
        labels, conf = Segmenter.decide(x)
        want_labels, want_conf = Segmenter._decide(x)
        assert labels.shape == conf.shape == (2, height, 33)
        assert torch.equal(labels, want_labels) and torch.equal(conf, want_conf)


@pytest.mark.parametrize("classes", [2, 3, 8])
def test_labels_of_equals_argmax_with_ties_and_in_every_layout(classes):
    """labels_of (max over the classes) is argmax: the first class on exact ties, in NCHW,
    channels_last and bf16 logits."""
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(2, classes, 64, 48, generator=g) * 3
    logits[:, :, :16] = torch.randint(0, 2, (2, classes, 16, 48), generator=g).float()  # ties
    ties = (logits[:, :, :16] == logits[:, :, :16].amax(1, keepdim=True)).sum(1) > 1
    assert ties.float().mean() > 0.3  # the tie rows do hold ties
    for x in (logits, logits.contiguous(memory_format=torch.channels_last), logits.bfloat16()):
        got = Segmenter.labels_of(x)
        assert got.dtype == torch.uint8 and got.shape == (2, 64, 48)
        assert torch.equal(got, x.argmax(1).to(torch.uint8))


@pytest.mark.parametrize(("tile", "halo", "rows_per_task", "batch"), [
    (128, 16, 1, 1), (96, 16, 2, 3),
])
def test_confidence_is_cropped_like_the_labels(segmenter, crop, tile, halo, rows_per_task,
                                               batch):
    grid = TileGrid(crop.shape[1], crop.shape[0], TileGeometry(tile, halo), rows_per_task)
    for y0, y1 in grid.all_strip_bounds():
        r0, r1 = grid.read_window(y0, y1)
        plain = segmenter.segment_strip_simple(crop[r0:r1], grid, y0, y1, batch)
        labels, conf = segmenter.segment_strip_simple(crop[r0:r1], grid, y0, y1, batch,
                                                      with_confidence=True)
        piped_l, piped_c, stats = segmenter.segment_rows(
            region_rows(crop[r0:r1], r0), grid, y0, y1, batch, prefetch=2, with_confidence=True)
        assert np.array_equal(labels, plain) and np.array_equal(piped_l, plain)
        assert np.array_equal(piped_c, conf)
        assert conf.shape == labels.shape == (y1 - y0, crop.shape[1]) and conf.dtype == np.uint8
        assert stats.tiles == len(grid.strip_tiles(y0, y1))
        # the kept pixels of the first tile are that tile's confidence there
        tiles = cut_tiles(strip_bands(crop[r0:r1], grid, y0, y1), [(0, 0)], grid)
        _, c0 = segmenter.predict_tiles_with_confidence(tiles)
        r, c = grid.strip_spans(y0, y1)[0], grid.col_spans[0]
        kept = c0[0, r.keep0 - r.start : r.keep1 - r.start, c.keep0 - c.start : c.keep1 - c.start]
        np.testing.assert_array_equal(conf[: r.keep1 - y0, c.keep0 : c.keep1], kept)


def test_segment_array_with_confidence_matches_labels_alone(segmenter, crop):
    geometry = TileGeometry(128, 16)
    labels, conf = segmenter.segment_array(crop, geometry, with_confidence=True)
    assert np.array_equal(labels, segmenter.segment_array(crop, geometry))
    assert conf.shape == crop.shape[:2] and conf.dtype == np.uint8
    n = segmenter.package.n_classes
    assert conf.min() >= 255 // n and conf.max() <= 255 and conf.std() > 0


@pytest.mark.parametrize("name", ["openvino", "onnxruntime"])
def test_every_runtime_gives_the_same_confidence(name, tiny_package, segmenter, crop, tmp_path):
    pytest.importorskip(name)
    seg = Segmenter(tiny_package, device="cpu", threads=1, runtime=name, cache_dir=tmp_path)
    geometry = TileGeometry(128, 16)
    labels, conf = seg.segment_array(crop, geometry, with_confidence=True)
    ref_labels, ref_conf = segmenter.segment_array(crop, geometry, with_confidence=True)
    assert np.array_equal(labels, seg.segment_array(crop, geometry))  # labels unchanged
    assert (labels == ref_labels).mean() >= 0.999  # float rounding between runtimes
    # logits agree to ~1e-3, so the stored probability to about one step of 1/255
    assert np.abs(conf.astype(int) - ref_conf).max() <= 1
