"""Row strips -> pyramidal label map, overlay and preview (worker.stitching)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import pyvips

from worker.errors import ImageFormatError
from worker.stitching import (
    PREVIEW_GAP,
    colourise,
    preview_size,
    read_strip,
    write_label_pyramid,
    write_overlay,
    write_preview,
    write_strip,
)

PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
W = 600


def _strips(rng) -> list[np.ndarray]:
    """Three strips (the last one shorter) of 5x5-px blocks of classes 0, 1 and 3 only.

    5 px blocks straddle the 2x2 windows of the pyramid, so a mean shrink would create 2s.
    """
    out = []
    for h in (224, 224, 152):
        blocks = rng.choice(np.array([0, 1, 3], np.uint8), size=(h // 5 + 1, W // 5 + 1))
        out.append(np.kron(blocks, np.ones((5, 5), np.uint8))[:h, :W].copy())
    return out


@pytest.fixture
def stitched(tmp_path):
    rng = np.random.default_rng(1)
    strips = _strips(rng)
    paths = []
    for i, s in enumerate(strips):
        p = tmp_path / f"{i:05d}.tif"
        write_strip(s, p)
        paths.append(p)
    out = tmp_path / "labels.tif"
    write_label_pyramid(paths, out)
    return out, np.concatenate(strips)


@pytest.fixture
def source(tmp_path):
    """A smooth 16-bit grey source image of the stitched size (W x 600)."""
    y, x = np.mgrid[0:600, 0:W]
    grey = ((x + y) * 65535 // (W + 600)).astype(np.uint16)
    path = tmp_path / "source.tif"
    pyvips.Image.new_from_array(grey).tiffsave(str(path))
    return path, grey


def test_strip_round_trip(tmp_path):
    labels = np.random.default_rng(0).integers(0, 8, size=(37, 101), dtype=np.uint8)
    path = tmp_path / "row.tif"
    write_strip(labels, path)
    back = read_strip(path)
    assert back.dtype == np.uint8 and back.shape == (37, 101)
    np.testing.assert_array_equal(back, labels)
    with PIL.Image.open(path) as im:  # an independent reader
        assert im.info["compression"] == "tiff_adobe_deflate"
        assert im.mode == "L"


def test_write_strip_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_strip(np.zeros((4, 4), np.int32), tmp_path / "x.tif")
    with pytest.raises(ValueError):
        write_strip(np.zeros((2, 4, 4), np.uint8), tmp_path / "x.tif")


def test_pyramid_full_resolution_is_exact_concatenation(stitched):
    path, expected = stitched
    full = pyvips.Image.new_from_file(str(path))
    assert full.get("n-pages") > 1
    assert (full.bands, full.format) == (1, "uchar")
    assert (full.width, full.height) == (W, 600)
    assert full.get("tile-width") == 256 and full.get("tile-height") == 256
    with PIL.Image.open(path) as im:
        assert im.info["compression"] == "tiff_adobe_deflate"
        assert 322 in im.tag_v2 and im.tag_v2[322] == 256  # TileWidth tag: tiled
    got = full.numpy().reshape(full.height, full.width)
    np.testing.assert_array_equal(got, expected)


def test_pyramid_levels_use_mode_not_mean(stitched):
    path, _ = stitched
    n_pages = pyvips.Image.new_from_file(str(path)).get("n-pages")
    for page in range(1, n_pages):
        level = pyvips.Image.new_from_file(str(path), page=page)
        assert (level.bands, level.format) == (1, "uchar")
        values = set(np.unique(level.numpy()).tolist())
        # averaging 0/1/3 labels would create 2 (and other values); mode cannot
        assert values <= {0, 1, 3}, f"page {page} holds labels {values}"


def test_pyramid_rejects_mixed_widths(tmp_path):
    write_strip(np.zeros((4, 10), np.uint8), tmp_path / "a.tif")
    write_strip(np.zeros((4, 11), np.uint8), tmp_path / "b.tif")
    with pytest.raises(ValueError, match="width"):
        write_label_pyramid([tmp_path / "a.tif", tmp_path / "b.tif"], tmp_path / "l.tif")
    with pytest.raises(ValueError):
        write_label_pyramid([], tmp_path / "l.tif")


def test_colourise_maps_indices_to_palette():
    labels = pyvips.Image.new_from_array(np.array([[0, 1], [3, 2]], np.uint8))
    rgb = colourise(labels, PALETTE).numpy()
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert [tuple(rgb[0, 0]), tuple(rgb[0, 1]), tuple(rgb[1, 0]), tuple(rgb[1, 1])] == [
        PALETTE[0],
        PALETTE[1],
        PALETTE[3],
        PALETTE[2],
    ]


def test_overlay_written_with_expected_size_and_blend(source, tmp_path):
    # 40-px blocks: big enough for JPEG's chroma subsampling not to blur the class colours
    blocks = np.random.default_rng(4).choice(np.array([0, 1, 3], np.uint8), size=(15, 15))
    labels = np.kron(blocks, np.ones((40, 40), np.uint8))
    write_strip(labels, tmp_path / "strip.tif")
    label_path = tmp_path / "big-blocks.tif"
    write_label_pyramid([tmp_path / "strip.tif"], label_path)
    source_path, grey = source
    out = tmp_path / "overlay.tif"
    write_overlay(source_path, label_path, PALETTE, out, alpha=0.45)
    overlay = pyvips.Image.new_from_file(str(out))
    assert (overlay.width, overlay.height, overlay.bands, overlay.format) == (W, 600, 3, "uchar")
    assert overlay.get("n-pages") > 1
    assert overlay.get("tile-width") == 256
    # JPEG is lossy: compare with the exact blend (mostly luma), and check
    # that each class is tinted towards its colour
    got = overlay.numpy().astype(float)
    grey8 = (grey >> 8).astype(float)[..., None]
    expected = 0.55 * grey8 + 0.45 * np.array(PALETTE, float)[labels]
    luma = np.array([0.299, 0.587, 0.114])
    assert np.abs(got @ luma - expected @ luma).mean() < 1.5  # alpha 0.4 or 0.5: ~3.7
    assert np.abs(got - expected).mean() < 4
    for cls, channel in ((0, 0), (1, 1)):
        mask = labels == cls
        means = got[mask].mean(axis=0)
        assert means[channel] > max(np.delete(means, channel)) + 40


def test_overlay_rejects_size_mismatch(stitched, tmp_path):
    label_path, _ = stitched
    small = tmp_path / "small.png"
    pyvips.Image.black(10, 10).cast("uchar").pngsave(str(small))
    with pytest.raises(ValueError, match="must match"):
        write_overlay(small, label_path, PALETTE, tmp_path / "o.tif")


def test_preview_size_and_label_colours(stitched, source, tmp_path):
    label_path, _ = stitched
    source_path, _ = source
    out = tmp_path / "preview.png"
    max_side = 400
    write_preview(source_path, label_path, PALETTE, out, max_side=max_side, names=list("abcd"))
    preview = pyvips.Image.new_from_file(str(out))
    w, h = preview_size(W, 600, max_side)
    assert preview.width == 2 * w + PREVIEW_GAP <= max_side
    assert preview.height > h  # panels plus a legend strip
    assert preview.bands == 3
    right = preview.numpy()[:h, w + PREVIEW_GAP :]
    colours = {tuple(c) for c in right.reshape(-1, 3).tolist()}
    # labels are sampled, never interpolated: only colours of classes 0, 1, 3 appear
    assert colours <= {PALETTE[0], PALETTE[1], PALETTE[3]}
    assert len(colours) == 3


def test_preview_never_enlarges(stitched, source, tmp_path):
    label_path, _ = stitched
    source_path, _ = source
    out = tmp_path / "preview.png"
    write_preview(source_path, label_path, PALETTE, out, max_side=5000)
    assert pyvips.Image.new_from_file(str(out)).width == 2 * W + PREVIEW_GAP


def test_read_strip_rejects_rgb(tmp_path):
    path = tmp_path / "rgb.tif"
    pyvips.Image.black(4, 4, bands=3).cast("uchar").tiffsave(str(path))
    with pytest.raises(ImageFormatError, match="1-band"):
        read_strip(path)


@pytest.mark.timeout(60)
def test_pyramid_corrupt_strip_raises_and_leaves_no_output(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.tif")
        write_strip(rng.integers(0, 8, size=(64, 300), dtype=np.uint8), paths[-1])
    data = bytearray(paths[1].read_bytes())
    data[200:4000] = bytes(3800)  # clobber compressed pixel data, keep the header
    paths[1].write_bytes(bytes(data))
    out = tmp_path / "labels.tif"
    with pytest.raises(ImageFormatError, match="1.tif"):
        write_label_pyramid(paths, out)
    assert not out.exists()
