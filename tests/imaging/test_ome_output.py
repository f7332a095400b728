"""The job's pictures as pyramidal OME-TIFF: OME-XML valid against the OME schema (ome-types
with xmlschema), physical pixel size, class names and colours, and every level read back with
tifffile; the viewer's level reader sees the same levels."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.ome import CLASS_COLOURS_NS, CLASS_NAMES_NS, pyramid_levels
from imaging.rendering import write_pictures
from imaging.stitching import write_strip
from tests.imaging.conftest import PALETTE, W, label_strips

tifffile = pytest.importorskip("tifffile")
ome_types = pytest.importorskip("ome_types")
NAMES = ["hematite", "magnetite", "slag", "pore"]


def _strip_files(tmp_path, seed: int):
    """Random label strips and the row checkpoint files they are written to."""
    strips = label_strips(np.random.default_rng(seed))
    paths = [tmp_path / f"{i:05d}.tif" for i in range(len(strips))]
    for s, path in zip(strips, paths, strict=True):
        write_strip(s, path)
    return strips, paths


@pytest.fixture
def pictures(source, tmp_path):
    strips, paths = _strip_files(tmp_path, seed=11)
    work = tmp_path / "out"
    write_pictures(source[0], paths, PALETTE, work, names=NAMES, pixel_size_um=0.65)
    return work, np.concatenate(strips)


def _validated(path):
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        xml = tif.ome_metadata
    pytest.importorskip("xmlschema")
    return ome_types.from_xml(xml, validate=True)  # raises on a schema violation


def test_label_map_is_a_valid_ome_pyramid_with_scale_and_classes(pictures):
    work, expected = pictures
    ome = _validated(work / "labels.tif")
    (image,) = ome.images
    pixels = image.pixels
    assert (pixels.size_x, pixels.size_y, pixels.size_c, pixels.type.value) == (W, 600, 1, "uint8")
    assert pixels.physical_size_x == pytest.approx(0.65)
    assert pixels.physical_size_y == pytest.approx(0.65)
    assert pixels.physical_size_x_unit.value == "µm"
    maps = {a.namespace: {m.k: m.value for m in a.value.ms}
            for a in ome.structured_annotations.map_annotations}
    assert maps[CLASS_NAMES_NS] == {str(i): n for i, n in enumerate(NAMES)}
    assert maps[CLASS_COLOURS_NS]["3"] == "#{:02x}{:02x}{:02x}".format(*PALETTE[3])
    assert {r.id for r in image.annotation_refs} == {a.id for a in ome.structured_annotations.map_annotations}

    with tifffile.TiffFile(work / "labels.tif") as tif:
        levels = tif.series[0].levels
        assert len(levels) >= 3
        full = levels[0].asarray()
        np.testing.assert_array_equal(full, expected)
        for k, level in enumerate(levels[1:], start=1):
            data = level.asarray()
            assert data.shape == (600 >> k, W >> k) and data.dtype == np.uint8
            assert set(np.unique(data).tolist()) <= {0, 1, 3}  # mode, never averaged
        x_res = tif.pages[0].tags["XResolution"].value
        assert tif.pages[0].tags["ResolutionUnit"].value == 3  # centimetre
        assert 1e4 * x_res[1] / x_res[0] == pytest.approx(0.65, rel=1e-4)
    # the viewer's and the preview's reader sees the same levels
    assert [f for f, _ in pyramid_levels(work / "labels.tif")] == [1 << k for k in range(len(levels))]


def test_overlay_is_a_valid_rgb_ome_pyramid(pictures):
    work, _ = pictures
    ome = _validated(work / "overlay.tif")
    pixels = ome.images[0].pixels
    assert (pixels.size_x, pixels.size_y, pixels.size_c, pixels.interleaved) == (W, 600, 3, True)
    assert pixels.channels[0].samples_per_pixel == 3
    assert pixels.physical_size_x == pytest.approx(0.65)
    with tifffile.TiffFile(work / "overlay.tif") as tif:
        levels = tif.series[0].levels
        assert len(levels) >= 3
        for k, level in enumerate(levels):
            data = level.asarray()
            assert data.shape == (600 >> k, W >> k, 3) and data.dtype == np.uint8
            assert data.std() > 0  # pixels, not an empty page


def test_without_a_pixel_size_no_scale_is_claimed(source, tmp_path):
    _, paths = _strip_files(tmp_path, seed=12)
    write_pictures(source[0], paths, PALETTE, tmp_path / "out")
    ome = _validated(tmp_path / "out" / "labels.tif")
    assert ome.images[0].pixels.physical_size_x is None
    assert not ome.structured_annotations.map_annotations  # no names given


def test_levels_of_the_old_page_layout_are_still_read(tmp_path):
    """Jobs finished before the OME-TIFF outputs have one top-level page per level: the
    viewer's and the preview's level reader finds them too."""
    import pyvips

    labels = (np.arange(600 * W) % 4).astype(np.uint8).reshape(600, W)
    old, new = tmp_path / "old.tif", tmp_path / "new.tif"
    image = pyvips.Image.new_from_array(labels)
    image.tiffsave(str(old), pyramid=True, tile=True, tile_width=256, tile_height=256,
                   region_shrink="mode")
    from imaging.ome import save_ome_pyramid

    save_ome_pyramid(image, new, name="labels", labels=True)
    assert pyvips.Image.new_from_file(str(old)).get("n-pages") > 1  # the old layout indeed
    got_old = [(f, im.width, im.height) for f, im in pyramid_levels(old)]
    got_new = [(f, im.width, im.height) for f, im in pyramid_levels(new)]
    assert got_old == got_new and len(got_new) >= 3
    for (_, a), (_, b) in zip(pyramid_levels(old), pyramid_levels(new), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
