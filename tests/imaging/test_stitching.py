"""Row strips -> pyramidal label map (imaging.stitching)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import pyvips

from imaging.errors import ImageFormatError
from imaging.ome import pyramid_levels
from imaging.stitching import read_strip, write_label_pyramid, write_strip
from tests.imaging.conftest import W


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
    assert full.get("n-subifds") > 1  # OME-TIFF: sub-resolution levels in SubIFDs
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
    levels = pyramid_levels(path)
    assert len(levels) > 2
    for page, (_, level) in enumerate(levels[1:], start=1):
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
    with pytest.raises(ImageFormatError, match=r"1\.tif"):
        write_label_pyramid(paths, out)
    assert not out.exists()


def test_strips_and_pyramids_are_written_with_the_one_deflate_setting(tmp_path):
    import tifffile

    from imaging.stitching import DEFLATE

    rng = np.random.default_rng(0)
    labels = (rng.random((96, 320)) * 4).astype(np.uint8)
    strip, pyramid = tmp_path / "s.tif", tmp_path / "p.tif"
    write_strip(labels, strip)
    write_label_pyramid([strip], pyramid)
    for path in (strip, pyramid):
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE, path.name
            assert page.predictor == tifffile.PREDICTOR.HORIZONTAL, path.name
            np.testing.assert_array_equal(page.asarray(), labels)  # lossless at any level
    # the level is the fast one, and the same pixels at libvips' default level take fewer bytes
    assert DEFLATE["level"] == 1
    default = tmp_path / "d.tif"
    pyvips.Image.new_from_array(labels).tiffsave(str(default), compression="deflate",
                                                 predictor="horizontal", keep="none")
    assert strip.stat().st_size >= default.stat().st_size
