"""Pictures of a label map: colour overlay and preview (imaging.rendering)."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from imaging.errors import ImageFormatError
from imaging.ome import pyramid_levels
from imaging.rendering import PREVIEW_GAP, colourise, preview_size, write_overlay, write_preview
from imaging.stitching import write_label_pyramid, write_strip
from tests.imaging.conftest import PALETTE, W, label_strips


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
    assert len(pyramid_levels(out)) > 1
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


def _strip_files(tmp_path, strips) -> list:
    paths = []
    for i, strip in enumerate(strips):
        paths.append(tmp_path / f"strip-{i}.tif")
        write_strip(strip, paths[-1])
    return paths


def test_overlay_from_strips_equals_overlay_from_label_map(source, tmp_path):
    """The reducer renders the overlay from the row strips while it writes the label map: the
    result must be the overlay of the stitched label map, byte for byte in its pixels."""
    paths = _strip_files(tmp_path, label_strips(np.random.default_rng(7)))
    label_path = tmp_path / "labels.tif"
    write_label_pyramid(paths, label_path)
    source_path, _ = source
    write_overlay(source_path, label_path, PALETTE, tmp_path / "from-map.tif")
    write_overlay(source_path, paths, PALETTE, tmp_path / "from-strips.tif")
    from_map, from_strips = (pyramid_levels(tmp_path / n) for n in ("from-map.tif", "from-strips.tif"))
    assert len(from_map) == len(from_strips) > 1
    for (_, a), (_, b) in zip(from_map[:2], from_strips[:2], strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_overlay_from_strips_rejects_wrong_total_height(source, tmp_path):
    strips = label_strips(np.random.default_rng(8))[:2]  # 448 of the source's 600 rows
    out = tmp_path / "overlay.tif"
    with pytest.raises(ValueError, match="must match"):
        write_overlay(source[0], _strip_files(tmp_path, strips), PALETTE, out)
    assert not out.exists()


@pytest.mark.timeout(60)
def test_overlay_from_a_corrupt_strip_names_it_and_leaves_no_output(source, tmp_path):
    paths = _strip_files(tmp_path, label_strips(np.random.default_rng(9)))
    data = bytearray(paths[1].read_bytes())
    data[200:4000] = bytes(3800)  # clobber compressed pixel data, keep the header
    paths[1].write_bytes(bytes(data))
    out = tmp_path / "overlay.tif"
    with pytest.raises(ImageFormatError, match=r"strip-1\.tif"):
        write_overlay(source[0], paths, PALETTE, out)
    assert not out.exists()


# ---------------------------------------------------------------- source thumbnails

@pytest.mark.parametrize(("h", "w", "f"), [(96, 120, 4), (97, 121, 4), (5, 7, 1), (10, 3, 5)])
def test_shrink_rows_is_the_block_mean_with_edges_repeated(h, w, f):
    from imaging.rendering import shrink_rows

    rows = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    got = shrink_rows(rows, f)
    th, tw = -(-h // f), -(-w // f)
    assert got.shape == (th, tw, 3) and got.dtype == np.uint8
    padded = np.pad(rows, ((0, th * f - h), (0, tw * f - w), (0, 0)), mode="edge").astype(float)
    exact = padded.reshape(th, f, tw, f, 3).mean(axis=(1, 3))
    assert np.abs(got - exact).max() <= 1.0  # libvips rounds its box mean


def test_shrink_rows_rejects_what_it_cannot_shrink():
    from imaging.rendering import shrink_rows

    with pytest.raises(ValueError, match="uint8"):
        shrink_rows(np.zeros((4, 4), np.uint8), 2)
    with pytest.raises(ValueError, match=">= 1"):
        shrink_rows(np.zeros((4, 4, 3), np.uint8), 0)


@pytest.mark.parametrize(("width", "height", "stride"),
                         [(6144, 6144, 1536), (20480, 16896, 1536), (20480, 16896, 768),
                          (700, 500, 64), (3396, 2547, 896)])
def test_thumbnail_factor_divides_the_stride_and_keeps_twice_the_panel(width, height, stride):
    from imaging.rendering import thumbnail_factor

    f = thumbnail_factor(width, height, stride)
    w, h = preview_size(width, height)
    assert f is not None and f >= 1 and stride % f == 0
    assert width / f >= 2 * w or f == 1
    assert height / f >= 2 * h or f == 1
    # the largest such divisor: the next divisor of the stride would leave too few pixels
    bigger = [d for d in range(f + 1, stride + 1) if stride % d == 0]
    if bigger:
        assert width // bigger[0] < 2 * w or height // bigger[0] < 2 * h


def test_no_thumbnail_factor_where_the_stride_has_no_divisor_near_the_ideal_one():
    from imaging.rendering import thumbnail_factor

    # T = 1024, halo = 13: stride 998 = 2 x 499; the ideal factor for a 20480 px pellet is 12
    assert thumbnail_factor(20480, 16896, 998) is None
    assert thumbnail_factor(20480, 16896, 996) == 12  # 996 = 12 x 83
    assert thumbnail_factor(700, 500, 998) == 1  # a small image needs no shrink at all


def test_preview_from_row_thumbnails_matches_the_one_from_the_source(stitched, tmp_path):
    """The left panel resized from the rows' shrunk source equals, up to resampling, the one
    resized from the whole source; the label panel and the legend are untouched."""
    from imaging.rendering import png_bytes, shrink_rows

    label_path, _ = stitched
    y, x = np.mgrid[0:600, 0:W]
    rgb = np.stack([(x * 255 // W), (y * 255 // 600), ((x // 37 + y // 23) % 2) * 200],
                   axis=-1).astype(np.uint8)
    source_path = tmp_path / "rgb.tif"
    pyvips.Image.new_from_array(rgb, interpretation="srgb").tiffsave(str(source_path))
    thumbs = []
    for i, (lo, hi) in enumerate([(0, 224), (224, 448), (448, 600)]):  # rows of 224 = 2 x 112
        thumbs.append(tmp_path / f"{i}.thumbnail.png")
        thumbs[-1].write_bytes(png_bytes(shrink_rows(rgb[lo:hi], 2)))
    plain, from_thumbs = tmp_path / "plain.png", tmp_path / "thumbs.png"
    write_preview(source_path, label_path, PALETTE, plain, max_side=400)
    write_preview(source_path, label_path, PALETTE, from_thumbs, max_side=400, thumbnails=thumbs)
    a = pyvips.Image.new_from_file(str(plain)).numpy().astype(int)
    b = pyvips.Image.new_from_file(str(from_thumbs)).numpy().astype(int)
    w, h = preview_size(W, 600, 400)
    assert a.shape == b.shape
    assert np.array_equal(a[:, w:], b[:, w:])  # label panel, gap and legend
    assert np.abs(a[:h, :w] - b[:h, :w]).mean() < 3  # the source panel, resampled twice
    assert not np.array_equal(a[:h, :w], b[:h, :w])  # (it did come from the thumbnails)


def test_preview_falls_back_to_the_source_when_a_thumbnail_is_unreadable(stitched, source,
                                                                        tmp_path):
    label_path, _ = stitched
    source_path, _ = source
    bad = tmp_path / "0.thumbnail.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    plain, fallback = tmp_path / "plain.png", tmp_path / "fallback.png"
    write_preview(source_path, label_path, PALETTE, plain, max_side=400)
    write_preview(source_path, label_path, PALETTE, fallback, max_side=400, thumbnails=[bad])
    assert plain.read_bytes() == fallback.read_bytes()
