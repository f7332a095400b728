"""Microscope inputs: each format written by its own writer (tifffile for OME-TIFF and an
Aperio-SVS-like TIFF that OpenSlide opens, pylibCZIrw for CZI), read back through
imaging.formats; pixel size from the metadata; the bit-depth rules; clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import pyvips

from imaging.errors import DarkSourceError, ImageFormatError
from imaging.formats import (
    SUPPORTED,
    check_bit_depth,
    read_rgb8,
    sniff_format,
    source_info,
    source_pixel_size_um,
    source_scenes,
    write_model_ready,
)
from imaging.formats.czi import czi_significant_bits
from imaging.formats.ometiff import ome_scenes
from imaging.formats.scaling import array_to_uint8
from imaging.metadata import read_pixel_size_um
from imaging.reading import (
    open_image,
    read_nodata_rows,
    read_rows,
    significant_bits_of,
    to_uint8,
    write_black_fill_nodata,
)
from tests.imaging.damage import noise_libvips_decodes

tifffile = pytest.importorskip("tifffile")
MAX = 10**8


def rgb(h=300, w=420, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def model_ready_pixels(src, tmp_path, significant_bits=None) -> np.ndarray:
    info = write_model_ready(src, tmp_path / "ready.tif", max_pixels=MAX,
                             significant_bits=significant_bits)
    ready = source_info(info.path, max_pixels=MAX)
    assert ready.is_model_ready and ready.format in ("TIFF", "BigTIFF")
    return read_rows(open_image(info.path, max_pixels=MAX), 0, info.height)


# ------------------------------------------------------------------------------ OME-TIFF
def test_ome_tiff_pyramid_reads_full_resolution_and_pixel_size(tmp_path):
    pytest.importorskip("ome_types")
    a = rgb(600, 700)
    path = tmp_path / "mosaic.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(a, tile=(256, 256), photometric="rgb", subifds=2,
                 metadata={"axes": "YXS", "PhysicalSizeX": 0.345, "PhysicalSizeXUnit": "µm",
                           "PhysicalSizeY": 0.345, "PhysicalSizeYUnit": "µm"})
        tw.write(a[::2, ::2], tile=(256, 256), photometric="rgb", subfiletype=1)
        tw.write(a[::4, ::4], tile=(256, 256), photometric="rgb", subfiletype=1)
    assert sniff_format(path) == "OME-TIFF"
    info = source_info(path, max_pixels=MAX)
    assert (info.format, info.width, info.height, info.bands, info.dtype) == ("OME-TIFF", 700, 600, 3, "uint8")
    assert info.pixel_size_um == pytest.approx(0.345)
    assert info.is_model_ready  # tiled 8-bit RGB in page 0: rows read it directly
    np.testing.assert_array_equal(read_rows(open_image(path, max_pixels=MAX), 0, 600), a)


def test_ome_tiff_16_bit_planar_channels_nm_unit(tmp_path):
    pytest.importorskip("ome_types")
    planes = np.random.default_rng(1).integers(0, 65536, (3, 200, 260), dtype=np.uint16)
    path = tmp_path / "planar.ome.tif"
    tifffile.imwrite(path, planes, ome=True,
                     metadata={"axes": "CYX", "PhysicalSizeX": 650.0, "PhysicalSizeXUnit": "nm"})
    info = source_info(path, max_pixels=MAX)
    assert (info.width, info.height, info.bands, info.dtype) == (260, 200, 3, "uint16")
    assert not info.is_model_ready
    assert source_pixel_size_um(path) == pytest.approx(0.65)
    got = model_ready_pixels(path, tmp_path)
    np.testing.assert_array_equal(got, np.moveaxis(planes >> 8, 0, 2).astype(np.uint8))


def test_ome_tiff_plane_with_noise_libtiff_decodes_is_not_converted(tmp_path):
    """The planes of an OME-TIFF that is converted have their deflate checksums verified
    (imaging/integrity.py), as page 0 of a plain TIFF has."""
    planes = np.random.default_rng(2).integers(0, 65536, (3, 256, 256), dtype=np.uint16)
    planes = (planes // 64 + np.add.outer(np.arange(256), np.arange(256)) * 60).astype(np.uint16)
    path = tmp_path / "noisy.ome.tif"
    noise_libvips_decodes(path, lambda: tifffile.imwrite(
        path, planes, ome=True, compression="zlib", rowsperstrip=128, metadata={"axes": "CYX"}),
        page=2)
    with pytest.raises(ImageFormatError, match=r"noisy\.ome\.tif.*does not inflate"):
        write_model_ready(path, tmp_path / "ready.tif", max_pixels=MAX)
    assert not (tmp_path / "ready.tif").exists()


def test_ome_tiff_largest_series_is_read(tmp_path):
    """Older multi-resolution OME-TIFFs store a thumbnail as another Image: the full-resolution
    series is the one with the most pixels."""
    pytest.importorskip("ome_types")
    small, big = rgb(40, 50, seed=2), rgb(120, 160, seed=3)
    path = tmp_path / "two-series.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(small, photometric="rgb", metadata={"axes": "YXS"})
        tw.write(big, photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 2.0})
    info = source_info(path, max_pixels=MAX)
    assert (info.width, info.height, info.pixel_size_um) == (160, 120, 2.0)
    np.testing.assert_array_equal(model_ready_pixels(path, tmp_path), big)


def test_ome_tiff_of_several_scenes_is_refused_rather_than_read_in_part(tmp_path):
    """An OME-TIFF of one Image per pellet (e.g. a multi-scene CZI converted by bfconvert):
    reading the largest would leave the other pellets out without a word."""
    pytest.importorskip("ome_types")
    path = tmp_path / "scenes.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(rgb(120, 160, seed=1), photometric="rgb", metadata={"axes": "YXS"})
        tw.write(rgb(100, 150, seed=2), photometric="rgb", metadata={"axes": "YXS"})
    with pytest.raises(ImageFormatError, match=r"scenes.ome.tif: an OME-TIFF of 2 images of "
                       r"similar size \(160 x 120, 150 x 100 px\).*give the scene to read "
                       r"\(one of 0, 1: --scene N.*--scene all.*its own file"):
        source_info(path, max_pixels=MAX)


def write_scenes(path, *, thumbnail=True):
    """An OME-TIFF of a thumbnail (Image 0, when asked) and two scenes of other sizes and
    pixel sizes (Images 1 and 2), as bfconvert writes a two-scene CZI; returns the scenes."""
    a, b = rgb(120, 160, seed=1), rgb(100, 150, seed=2)
    with tifffile.TiffWriter(path, ome=True) as tw:
        if thumbnail:
            tw.write(rgb(12, 16, seed=3), photometric="rgb", metadata={"axes": "YXS"})
        tw.write(a, photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 0.5,
                                                 "PhysicalSizeY": 0.5})
        tw.write(b, photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 0.75,
                                                 "PhysicalSizeY": 0.75})
    return a, b


def test_a_scene_of_a_multi_image_ome_tiff_is_read_with_its_own_size_and_pixel_size(tmp_path):
    """``scene`` picks an OME Image by its index in the file (the thumbnail is Image 0 here):
    its size, pixel size (OME-XML and the metadata reader alike) and pixels; an index the file
    lacks, and a scene for a file of another format, are refused naming what is there."""
    pytest.importorskip("ome_types")
    path = tmp_path / "mount.ome.tif"
    a, b = write_scenes(path)
    assert source_scenes(path) == [1, 2]
    for scene, pixels, size in ((1, a, 0.5), (2, b, 0.75)):
        info = source_info(path, max_pixels=MAX, scene=scene)
        assert (info.width, info.height, info.pixel_size_um, info.scene) == (
            pixels.shape[1], pixels.shape[0], size, scene)
        assert not info.is_model_ready  # not page 0: converted for the rows
        assert read_pixel_size_um(path, scene) == (size, size)
        write_model_ready(path, tmp_path / "ready.tif", max_pixels=MAX, scene=scene)
        np.testing.assert_array_equal(
            read_rows(open_image(tmp_path / "ready.tif", max_pixels=MAX), 0, info.height), pixels)
    assert source_info(path, max_pixels=MAX, scene=0).width == 16  # any Image may be named
    with pytest.raises(ImageFormatError, match=r"mount.ome.tif: has no scene 3; its images are "
                       r"0-2 \(16 x 12, 160 x 120, 150 x 100 px\)"):
        source_info(path, max_pixels=MAX, scene=3)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, a, photometric="rgb")
    assert source_scenes(plain) == []
    with pytest.raises(ImageFormatError, match=r"plain.tif: a TIFF file; a scene \(here 1\) "
                       r"is chosen only in OME-TIFFs"):
        source_info(plain, max_pixels=MAX, scene=1)
    one = tmp_path / "one.ome.tif"
    with tifffile.TiffWriter(one, ome=True) as tw:
        tw.write(a, photometric="rgb", metadata={"axes": "YXS"})
    assert source_scenes(one) == [0]


# -------------------------------------------------------------------------------- CZI
def test_czi_mosaic_with_offset_is_read_in_bands(tmp_path):
    czi = pytest.importorskip("pylibCZIrw.czi")
    a = rgb(600, 700, seed=4)
    path = tmp_path / "mosaic.czi"
    with czi.create_czi(str(path), exist_ok=True) as w:  # two tiles, BGR as CZI stores it
        w.write(np.ascontiguousarray(a[:, :350, ::-1]), location=(100, 40))
        w.write(np.ascontiguousarray(a[:, 350:, ::-1]), location=(450, 40))
        w.write_metadata(scale_x=0.5e-6, scale_y=0.5e-6)  # metres, as CZI stores scaling
    assert sniff_format(path) == "CZI"
    info = source_info(path, max_pixels=MAX)
    assert (info.width, info.height, info.bands, info.dtype) == (700, 600, 3, "uint8")
    assert info.pixel_size_um == pytest.approx(0.5)
    np.testing.assert_array_equal(model_ready_pixels(path, tmp_path), a)


def test_a_czis_z_planes_are_counted_and_the_first_is_read(tmp_path):
    czi = pytest.importorskip("pylibCZIrw.czi")
    planes = [rgb(60, 80, seed=z) for z in range(3)]
    path = tmp_path / "focus.czi"
    with czi.create_czi(str(path), exist_ok=True) as w:
        for z, a in enumerate(planes):
            w.write(np.ascontiguousarray(a[..., ::-1]), location=(0, 0), plane={"Z": z})
    info = source_info(path, max_pixels=MAX)
    assert (info.width, info.height, info.planes) == (80, 60, 3)
    np.testing.assert_array_equal(model_ready_pixels(path, tmp_path), planes[0])
    one = tmp_path / "one.czi"
    with czi.create_czi(str(one), exist_ok=True) as w:
        w.write(np.ascontiguousarray(planes[1][..., ::-1]), location=(0, 0))
    assert source_info(one, max_pixels=MAX).planes == 1


def test_czi_16_bit_grey_follows_the_high_byte_rule(tmp_path):
    czi = pytest.importorskip("pylibCZIrw.czi")
    grey = np.random.default_rng(5).integers(0, 65536, (270, 300, 1), dtype=np.uint16)
    path = tmp_path / "grey16.czi"
    with czi.create_czi(str(path), exist_ok=True) as w:
        w.write(grey, location=(0, 0))
    info = source_info(path, max_pixels=MAX)
    assert (info.bands, info.dtype, info.pixel_size_um) == (1, "uint16", None)
    got = model_ready_pixels(path, tmp_path)
    expected = (grey[..., 0] >> 8).astype(np.uint8)
    for band in range(3):
        np.testing.assert_array_equal(got[..., band], expected)


def test_czi_float_and_tiff_float_give_the_same_8_bit_input(tmp_path):
    """The numpy (CZI) and libvips (TIFF) paths apply one rule: the finite samples' range
    (imaging.display_range) onto 0..255."""
    czi = pytest.importorskip("pylibCZIrw.czi")
    values = np.random.default_rng(6).normal(1.0, 0.2, (90, 120)).astype(np.float32)
    czi_path, tif_path = tmp_path / "flat.czi", tmp_path / "flat.tif"
    with czi.create_czi(str(czi_path), exist_ok=True) as w:
        w.write(values[..., None], location=(0, 0))
    tifffile.imwrite(tif_path, values)
    a = model_ready_pixels(czi_path, tmp_path / "a")
    b = model_ready_pixels(tif_path, tmp_path / "b")
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float32 vs float64 rounding
    assert a.min() == 0 and a.max() == 255


def test_float_samples_that_are_not_finite_leave_the_others_scaled(tmp_path):
    """NaN and +-inf samples are left out of a float image's range (they once made it all
    black): the libvips path (job conversion and training reads) and the numpy path (CZI)
    give the finite samples' min..max map, NaN and -inf 0, +inf 255."""
    from imaging.formats.scaling import array_to_uint8, band_range

    values = np.random.default_rng(8).uniform(0.2, 0.9, (60, 80)).astype(np.float32)
    values[:5, :5], values[5:10, :5], values[10:15, :5] = np.inf, -np.inf, np.nan
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, values)
    expected = array_to_uint8(values, band_range(values))
    assert band_range(values) == (float(values[15:].min()), float(values[15:].max()))
    got = read_rgb8(path, max_pixels=MAX)
    np.testing.assert_array_equal(got[..., 0], expected)
    np.testing.assert_array_equal(model_ready_pixels(path, tmp_path)[..., 0], expected)
    assert (got[:5, :5] == 255).all() and (got[5:15, :5] == 0).all()
    assert got[15:].min() == 0 and got[15:].max() == 255  # the finite range, stretched


def _write(path, values):
    tifffile.imwrite(path, values)
    return path


def test_a_float_image_s_few_hot_pixels_leave_the_rest_its_range(tmp_path):
    """A flat-field-corrected field (about 0..1.1) with 5 hot pixels at 40, where the flat is
    nearly zero: by min..max every other pixel read at most 7 of 255 and the job labelled one
    phase; the range now reaches only a quarter of the field's span beyond its 0.01st and
    99.99th percentiles (imaging.display_range), alike on the libvips path
    (TIFF: the job's conversion and read_rgb8) and the numpy one (CZI)."""
    czi = pytest.importorskip("pylibCZIrw.czi")
    rng = np.random.default_rng(9)
    field = rng.uniform(0.0, 1.1, (200, 300)).astype(np.float32)
    hot = field.copy()
    hot[rng.integers(0, 200, 5), rng.integers(0, 300, 5)] = 40.0
    tif_path, czi_path = tmp_path / "hot.tif", tmp_path / "hot.czi"
    tifffile.imwrite(tif_path, hot)
    with czi.create_czi(str(czi_path), exist_ok=True) as w:
        w.write(hot[..., None], location=(0, 0))
    got = model_ready_pixels(tif_path, tmp_path / "t")[..., 0]
    np.testing.assert_array_equal(read_rgb8(tif_path, max_pixels=MAX)[..., 0], got)
    by_numpy = model_ready_pixels(czi_path, tmp_path / "c")[..., 0]
    assert np.abs(by_numpy.astype(int) - got.astype(int)).max() <= 1  # float32 vs float64
    cool = hot < 40
    # the field's range and a quarter of it beyond (imaging.display_range.REACH): 1.1 / 1.375
    assert 200 <= got[cool].max() <= 208 and got[cool].min() <= 1
    assert (got[~cool] == 255).all()
    # without the hot pixels, the field keeps its min..max map of before
    np.testing.assert_array_equal(
        model_ready_pixels(_write(tmp_path / "field.tif", field), tmp_path / "f")[..., 0],
        array_to_uint8(field, (float(field.min()), float(field.max()))))


def test_multichannel_czi_is_refused_with_what_to_do(tmp_path):
    czi = pytest.importorskip("pylibCZIrw.czi")
    path = tmp_path / "fluo.czi"
    with czi.create_czi(str(path), exist_ok=True) as w:
        for c in range(2):
            w.write(np.zeros((20, 30, 1), np.uint8), location=(0, 0), plane={"C": c})
    with pytest.raises(ImageFormatError, match=r"fluo.czi: a CZI with 2 channels.*export"):
        source_info(path, max_pixels=MAX)


# -------------------------------------------------------------------------- OpenSlide
def test_openslide_aperio_level_0_and_mpp(tmp_path):
    openslide = pytest.importorskip("openslide")
    a = rgb(600, 700, seed=7)
    path = tmp_path / "slide.svs"
    description = ("Aperio Image Library v12.0.0\r\n700x600 [0,0 700x600] (256x256) RGB"
                   "|AppMag = 20|MPP = 0.4990")
    tifffile.imwrite(path, a, tile=(256, 256), photometric="rgb", compression="zlib",
                     description=description, metadata=None)
    assert openslide.OpenSlide.detect_format(str(path)) == "aperio"
    assert sniff_format(path) == "OpenSlide:aperio"
    info = source_info(path, max_pixels=MAX)
    assert (info.width, info.height, info.bands) == (700, 600, 3)
    assert info.pixel_size_um == pytest.approx(0.499)
    assert not info.is_model_ready  # converted through OpenSlide's level 0
    np.testing.assert_array_equal(model_ready_pixels(path, tmp_path), a)


# ------------------------------------------------------------- pixels no image covers
def test_the_pixels_no_image_covers_are_written_as_a_no_data_mask(tmp_path):
    """A CZI's empty areas between sub-blocks, an image's fully transparent pixels and a
    mosaic's black fill make a no-data mask beside the converted source (the rows label them
    as the mount); sources every pixel of which is imaged leave none."""
    czi = pytest.importorskip("pylibCZIrw.czi")
    openslide = pytest.importorskip("openslide")
    scenes = tmp_path / "scenes.czi"
    with czi.create_czi(str(scenes), exist_ok=True) as w:  # two pellets, a gap between
        w.write(np.ascontiguousarray(rgb(40, 50, seed=1)), location=(0, 0))
        w.write(np.ascontiguousarray(rgb(40, 50, seed=2)), location=(100, 60))
    expected = np.ones((100, 150), bool)
    expected[0:40, 0:50] = expected[60:100, 100:150] = False
    tall = tmp_path / "tall.czi"  # a first band (256 rows) all imaged, a gap in the second
    with czi.create_czi(str(tall), exist_ok=True) as w:
        w.write(np.ascontiguousarray(rgb(300, 50, seed=3)), location=(0, 0))
        w.write(np.ascontiguousarray(rgb(200, 50, seed=4)), location=(0, 400))
    tall_gap = np.zeros((600, 50), bool)
    tall_gap[300:400] = True
    rgba = rgb(30, 40)
    alpha = np.full((30, 40), 255, np.uint8)
    alpha[5:10, 7:20] = 0
    alpha[20, 30] = 1  # all but transparent: imaged
    transparent = tmp_path / "stitched.png"
    pyvips.Image.new_from_array(np.dstack([rgba, alpha])).pngsave(str(transparent))
    grey_alpha = tmp_path / "grey-alpha.png"
    pyvips.Image.new_from_array(np.dstack([rgba[..., 0], alpha])).pngsave(str(grey_alpha))
    for path, mask in ((scenes, expected), (tall, tall_gap), (transparent, alpha == 0),
                       (grey_alpha, alpha == 0)):
        nodata = tmp_path / f"{path.stem}.nodata.tif"
        write_model_ready(path, tmp_path / f"{path.stem}.ready.tif", max_pixels=MAX,
                          nodata_path=nodata)
        np.testing.assert_array_equal(read_nodata_rows(nodata, 0, mask.shape[0]), mask,
                                      err_msg=path.name)
        np.testing.assert_array_equal(read_nodata_rows(nodata, 3, 12), mask[3:12])
    covered = tmp_path / "covered.czi"
    with czi.create_czi(str(covered), exist_ok=True) as w:
        w.write(np.ascontiguousarray(rgb(40, 50, seed=1)), location=(0, 0))
        w.write(np.ascontiguousarray(rgb(40, 50, seed=2)), location=(50, 0))
    slide = tmp_path / "slide.svs"
    tifffile.imwrite(slide, rgb(300, 300), tile=(256, 256), photometric="rgb",
                     description="Aperio Image Library v12.0.0\r\n300x300 [0,0 300x300] "
                     "(256x256) RGB|AppMag = 20|MPP = 0.4990", metadata=None)
    assert openslide.OpenSlide.detect_format(str(slide)) == "aperio"
    for path in (covered, slide):
        nodata = tmp_path / f"{path.stem}-none.nodata.tif"
        nodata.write_bytes(b"a mask of an earlier conversion")  # not this source's: removed
        write_model_ready(path, tmp_path / f"{path.stem}-none.tif", max_pixels=MAX,
                          nodata_path=nodata)
        assert not nodata.exists(), path.name
    # a mosaic stitched without an alpha band: where no field was imaged, black
    fields = np.zeros((700, 900, 3), np.uint8)
    fields[0:360, 0:470] = rgb(360, 470, seed=5)
    fields[330:700, 0:450] = rgb(370, 450, seed=6)  # fields offset as a stage leaves them
    fields[0:350, 440:900] = rgb(350, 460, seed=7)  # the fourth field was never imaged
    black = fields.max(axis=2) == 0
    for name in ("stitched.png", "stitched.tif"):  # converted, and read by the rows as it is
        path = tmp_path / name
        if name.endswith(".png"):
            pyvips.Image.new_from_array(fields).pngsave(str(path))
            nodata = tmp_path / "stitched-png.nodata.tif"
            write_model_ready(path, tmp_path / "stitched.ready.tif", max_pixels=MAX,
                              nodata_path=nodata)
        else:
            tifffile.imwrite(path, fields, tile=(256, 256), photometric="rgb")
            assert source_info(path, max_pixels=MAX).is_model_ready
            nodata = tmp_path / "stitched-tif.nodata.tif"
            assert write_black_fill_nodata(path, nodata, max_pixels=MAX)  # as the planner does
        np.testing.assert_array_equal(read_nodata_rows(nodata, 0, 700), black, err_msg=name)


# ------------------------------------------------- significant bits of 16-bit sources
#: A 12-bit camera's samples in 16 bits, and two above 4095 (a saturated or rogue pixel).
TWELVE_BIT = np.array([[0, 15, 16, 2047, 4080, 4095, 4096, 65535]], np.uint16)


def test_twelve_bit_samples_given_with_the_job_take_their_top_byte(tmp_path):
    """A plain 16-bit TIFF records no significant bits: the high byte leaves a 12-bit image
    at 1/16 of its brightness; given 12 the input is min(v >> 4, 255), above 4095 white."""
    path = tmp_path / "camera12.tif"
    tifffile.imwrite(path, TWELVE_BIT.repeat(3, axis=0))
    info = source_info(path, max_pixels=MAX)
    assert (info.dtype, info.significant_bits) == ("uint16", None)
    assert info.significant_bits_used() == 16 and info.significant_bits_used(12) == 12
    np.testing.assert_array_equal(model_ready_pixels(path, tmp_path)[0, :, 0],
                                  [0, 0, 0, 7, 15, 15, 16, 255])  # the high byte
    out = write_model_ready(path, tmp_path / "b12.tif", max_pixels=MAX, significant_bits=12)
    got = read_rows(open_image(out.path, max_pixels=MAX), 0, out.height)
    np.testing.assert_array_equal(got[0, :, 0], [0, 0, 1, 127, 255, 255, 255, 255])
    np.testing.assert_array_equal(got[..., 0], got[..., 2])  # grey replicated


@pytest.mark.parametrize("max_sample, bits", [(4095, 12), (16383, 14), (1023, 10), (65535, None)])
def test_a_tiff_s_max_sample_value_gives_its_significant_bits(tmp_path, max_sample, bits):
    """TIFF 6.0's MaxSampleValue (tag 281), which some camera software writes for 12- and
    14-bit data: read as the file's significant bits (65535: all 16, so none)."""
    path = tmp_path / "camera.tif"
    tifffile.imwrite(path, TWELVE_BIT.repeat(2, axis=0),
                     extratags=[(281, "H", 1, max_sample, False)])
    info = source_info(path, max_pixels=MAX)
    assert info.significant_bits == bits
    if bits == 12:
        np.testing.assert_array_equal(model_ready_pixels(path, tmp_path)[0, :, 0],
                                      [0, 0, 1, 127, 255, 255, 255, 255])
        np.testing.assert_array_equal(read_rgb8(path, max_pixels=MAX),
                                      model_ready_pixels(path, tmp_path / "again"))


@pytest.mark.parametrize("dtype", ["uint16", "int16"])
@pytest.mark.parametrize("bits", [8, 9, 12, 14, 15, 16, None])
def test_numpy_and_libvips_paths_map_significant_bits_alike(bits, dtype):
    """``min(max(v, 0) >> (b - 8), 255)`` on both paths, b at most the type's bits (16
    unsigned, 15 signed: 16 given for int16 converts it by its 15), the type's by default."""
    info = np.iinfo(dtype)
    values = np.random.default_rng(bits).integers(info.min, info.max + 1, (40, 50), dtype=dtype)
    by_numpy = array_to_uint8(values, significant_bits=bits)
    by_libvips = to_uint8(pyvips.Image.new_from_array(values), significant_bits=bits).numpy()
    np.testing.assert_array_equal(by_numpy, by_libvips)
    used = min(bits or 16, 16 if dtype == "uint16" else 15)
    expected = np.minimum(np.maximum(values.astype(np.int32), 0) >> (used - 8), 255)
    np.testing.assert_array_equal(by_numpy, expected)
    assert significant_bits_of(bits, None, dtype) == used
    assert significant_bits_of(None, bits, dtype) == used  # recorded by the file alike


def test_significant_bits_apply_to_16_bit_types_only():
    assert significant_bits_of(12, None, "uint8") is None
    assert significant_bits_of(None, 12, "float32") is None
    assert significant_bits_of(None, 1, "int16") == 15  # not a usable record: the type's
    with pytest.raises(ValueError, match="8 to 16"):
        significant_bits_of(17, None, "int16")


def test_a_12_bit_camera_s_signed_16_bit_tiff_reads_like_its_unsigned_twin(tmp_path):
    """Counts 0..4095 saved as int16 (some camera and MATLAB exports): given 12 bits, or with
    the file's MaxSampleValue 4095, the same input as the uint16 file; negative samples
    (a dark-frame subtraction's noise) black."""
    unsigned, signed = tmp_path / "u.tif", tmp_path / "s.tif"
    tifffile.imwrite(unsigned, TWELVE_BIT[:, :7].repeat(3, axis=0))
    with_noise = TWELVE_BIT[:, :7].astype(np.int16).repeat(3, axis=0)
    with_noise[1, 0] = -40
    tifffile.imwrite(signed, with_noise)
    info = source_info(signed, max_pixels=MAX)
    assert (info.dtype, info.significant_bits_used(), info.significant_bits_used(12)) == (
        "int16", 15, 12)
    expect = model_ready_pixels(unsigned, tmp_path / "u", significant_bits=12)
    got = model_ready_pixels(signed, tmp_path / "s", significant_bits=12)
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(got[0, :, 0], [0, 0, 1, 127, 255, 255, 255])
    recorded = tmp_path / "recorded.tif"
    tifffile.imwrite(recorded, with_noise, extratags=[(281, "H", 1, 4095, False)])
    assert source_info(recorded, max_pixels=MAX).significant_bits == 12
    np.testing.assert_array_equal(model_ready_pixels(recorded, tmp_path / "r"), expect)
    np.testing.assert_array_equal(read_rgb8(recorded, max_pixels=MAX), expect)


def test_ome_tiff_significant_bits_come_from_its_ome_xml(tmp_path):
    pytest.importorskip("ome_types")
    path = tmp_path / "camera12.ome.tif"
    tifffile.imwrite(path, TWELVE_BIT.repeat(2, axis=0), ome=True,
                     metadata={"axes": "YX", "SignificantBits": 12})
    info = source_info(path, max_pixels=MAX)
    assert info.significant_bits == 12 and info.significant_bits_used() == 12
    np.testing.assert_array_equal(model_ready_pixels(path, tmp_path)[0, :, 1],
                                  [0, 0, 1, 127, 255, 255, 255, 255])
    # what the job gives wins over what the file says
    out = write_model_ready(path, tmp_path / "b16.tif", max_pixels=MAX, significant_bits=16)
    np.testing.assert_array_equal(read_rows(open_image(out.path, max_pixels=MAX), 0, 1)[0, :, 0],
                                  TWELVE_BIT[0] >> 8)


@pytest.mark.parametrize("top, refused", [(4095, True), (4096, False), (255, True), (65535, False)])
def test_a_16_bit_source_nothing_describes_is_refused_where_the_high_byte_leaves_it_dark(
        tmp_path, top, refused):
    """Refused at most 12 bits (brightest 8-bit value <= 15), saying how many bits its
    samples fit in; never where the job gives its bits or the file records them."""
    values = np.linspace(0, top, 64, dtype=np.uint16).reshape(8, 8)
    path = tmp_path / "dark.tif"
    tifffile.imwrite(path, values)
    info = source_info(path, max_pixels=MAX)
    bits = 8 + (top >> 8).bit_length()
    refusal = rf"dark.tif: a 16-bit image whose samples all fit in {bits} bits.*--significant-bits N"
    if refused:  # the conversion itself refuses, and leaves nothing behind
        with pytest.raises(ImageFormatError, match=refusal):
            write_model_ready(path, tmp_path / "refused.tif", max_pixels=MAX,
                              nodata_path=tmp_path / "refused.nodata.tif")
        assert not list(tmp_path.glob("refused*"))
    # 16 given: converted by the high byte, as a conversion given nothing would be
    out = write_model_ready(path, tmp_path / "ready.tif", max_pixels=MAX, significant_bits=16)
    if refused:
        for said in (info, dataclasses.replace(info, significant_bits=1)):  # 1: not usable
            with pytest.raises(ImageFormatError, match=refusal):
                check_bit_depth(said, out.path, None)
    else:
        check_bit_depth(info, out.path, None)
    check_bit_depth(info, out.path, 16)  # the job says so: converted as it is
    recorded = dataclasses.replace(info, significant_bits=16)
    check_bit_depth(recorded, out.path, None)  # the file says so


@pytest.mark.parametrize("top, refused", [(4095, True), (4096, False), (32767, False)])
def test_a_signed_16_bit_source_nothing_describes_is_refused_where_it_reads_dark(
        tmp_path, top, refused):
    """The same rule for int16 samples, converted by their 15 bits: refused where they fit in
    12 (brightest 8-bit value <= 31, an image at 1/8 of its brightness), by the conversion and
    by read_rgb8 alike, offering a 12-bit camera; 16 given converts it as it is."""
    values = np.linspace(-100, top, 64).astype(np.int16).reshape(8, 8)
    path = tmp_path / "dark.tif"
    tifffile.imwrite(path, values)
    if refused:
        for convert in (lambda: write_model_ready(path, tmp_path / "no.tif", max_pixels=MAX),
                        lambda: read_rgb8(path, max_pixels=MAX)):
            with pytest.raises(DarkSourceError, match=(
                    r"dark.tif: a signed 16-bit image whose samples all fit in 12 bits.*"
                    r"brightest pixel 31 of 255.*--significant-bits N")) as refusal:
                convert()
            assert refusal.value.camera_bits == 12
        assert not (tmp_path / "no.tif").exists()
    else:
        write_model_ready(path, tmp_path / "ok.tif", max_pixels=MAX)
    out = write_model_ready(path, tmp_path / "as-is.tif", max_pixels=MAX, significant_bits=16)
    got = read_rows(open_image(out.path, max_pixels=MAX), 0, out.height)[..., 0]
    np.testing.assert_array_equal(got, np.maximum(values, 0) >> 7)


def test_the_bit_depth_check_reads_a_converted_file_written_again_at_its_path(tmp_path):
    """A job planned again writes its converted source at the same path: the check must see
    the new pixels, not libvips' cached result for the old file."""
    path, ready = tmp_path / "src.tif", tmp_path / "ready.tif"
    tifffile.imwrite(path, np.full((8, 8), 4095, np.uint16))
    info = source_info(path, max_pixels=MAX)
    with pytest.raises(ImageFormatError, match="fit in 12 bits"):
        write_model_ready(path, ready, max_pixels=MAX)
    write_model_ready(path, ready, max_pixels=MAX, significant_bits=16)  # as it is
    with pytest.raises(ImageFormatError, match="fit in 12 bits"):
        check_bit_depth(info, ready, None)
    tifffile.imwrite(path, np.full((8, 8), 65535, np.uint16))
    write_model_ready(path, ready, max_pixels=MAX)
    check_bit_depth(info, ready, None)


def test_read_rgb8_gives_what_a_jobs_rows_read_for_every_format(tmp_path):
    """Training reads its images whole through read_rgb8: the same pixels as the model-ready
    TIFF a job's planner writes, for each format and bit depth; a damaged file is refused."""
    pytest.importorskip("ome_types")
    czi = pytest.importorskip("pylibCZIrw.czi")
    rng = np.random.default_rng(7)
    files = {}
    files["planar.ome.tif"] = lambda p: tifffile.imwrite(
        p, rng.integers(0, 65536, (3, 40, 50), dtype=np.uint16), ome=True,
        metadata={"axes": "CYX", "SignificantBits": 14})
    files["signed.tif"] = lambda p: tifffile.imwrite(
        p, rng.integers(-32768, 32768, (40, 50), dtype=np.int16))
    files["flat.tif"] = lambda p: tifffile.imwrite(
        p, rng.random((40, 50), dtype=np.float32), imagej=True, metadata={"min": 0.2, "max": 0.8})
    files["rgb.png"] = lambda p: pyvips.Image.new_from_array(rgb(40, 50)).pngsave(str(p))

    def write_czi(p):
        with czi.create_czi(str(p), exist_ok=True) as w:
            w.write(rng.integers(0, 65536, (40, 50, 1), dtype=np.uint16), location=(0, 0))
    files["grey16.czi"] = write_czi
    for name, write in files.items():
        path = tmp_path / name
        write(path)
        expected = model_ready_pixels(path, tmp_path / name.replace(".", "-"))
        np.testing.assert_array_equal(read_rgb8(path, max_pixels=MAX), expected, err_msg=name)
        if name == "planar.ome.tif":  # the file's SignificantBits were applied
            assert source_info(path, max_pixels=MAX).significant_bits == 14
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, rgb(600, 700), photometric="rgb", tile=(256, 256), compression="zlib")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    with pytest.raises(ImageFormatError, match=r"cut\.tif"):
        read_rgb8(cut, max_pixels=MAX)


def test_significant_bits_resolution_rules():
    assert significant_bits_of(None, None, "uint16") == 16
    assert significant_bits_of(None, 14, "uint16") == 14
    assert significant_bits_of(12, 14, "uint16") == 12  # the job's number wins
    assert significant_bits_of(None, 1, "uint16") == 16  # a recorded 1-bit or 32-bit: not usable
    assert significant_bits_of(None, 32, "uint16") == 16
    assert significant_bits_of(12, 12, "uint8") is None  # 8-bit and float sources: no meaning
    assert significant_bits_of(12, None, "float32") is None
    with pytest.raises(ValueError, match="significant bits must be 8 to 16, got 17"):
        significant_bits_of(17, None, "uint8")


@pytest.mark.parametrize("metadata, expected", [
    ({"ImageDocument": {"Metadata": {"Information": {"Image": {"ComponentBitCount": "14"}}}}}, 14),
    ({"ImageDocument": {"Metadata": {"Information": {"Image": {"Dimensions": {"Channels": {
        "Channel": [{"@Id": "Channel:0", "ComponentBitCount": "12"}]}}}}}}}, 12),
    ({"ImageDocument": {"Metadata": {"Information": {"Image": {"Dimensions": {"Channels": {
        "Channel": {"@Id": "Channel:0", "ComponentBitCount": "12"}}}}}}}}, 12),
    ({"ImageDocument": {"Metadata": {"Information": {"Image": {"PixelType": "Gray16"}}}}}, None),
    ({"ImageDocument": {"Metadata": {"Information": {"Image": {"ComponentBitCount": "n/a"}}}}}, None),
    ({"ImageDocument": {"Metadata": {}}}, None),
    ({}, None),
])
def test_czi_significant_bits_from_zen_metadata(metadata, expected):
    """ZEN records a camera's bit depth as Information/Image/ComponentBitCount (and per
    channel); pylibCZIrw cannot write that element, so the parser is tested on the dict
    pylibCZIrw reads such metadata into."""
    assert czi_significant_bits(metadata) == expected


def test_czi_written_without_component_bit_count_keeps_the_high_byte(tmp_path):
    czi = pytest.importorskip("pylibCZIrw.czi")
    path = tmp_path / "grey16.czi"
    with czi.create_czi(str(path), exist_ok=True) as w:
        w.write(TWELVE_BIT.repeat(2, axis=0)[..., None], location=(0, 0))
    info = source_info(path, max_pixels=MAX)
    assert info.significant_bits is None and info.significant_bits_used() == 16
    out = write_model_ready(path, tmp_path / "b12.tif", max_pixels=MAX, significant_bits=12)
    np.testing.assert_array_equal(read_rows(open_image(out.path, max_pixels=MAX), 0, 1)[0, :, 0],
                                  [0, 0, 1, 127, 255, 255, 255, 255])


# ----------------------------------------------------------------- TIFF bit depths, errors
def test_16_bit_signed_tiff_clips_negatives_then_shifts_by_7(tmp_path):
    values = np.array([[-32768, -1, 0, 127, 128, 32767]], np.int16).repeat(4, axis=0)
    path = tmp_path / "signed.tif"
    tifffile.imwrite(path, values)
    assert source_info(path, max_pixels=MAX).dtype == "int16"
    got = model_ready_pixels(path, tmp_path)[..., 0]
    np.testing.assert_array_equal(got[0], [0, 0, 0, 0, 1, 255])


def test_imagej_float_uses_its_display_range(tmp_path):
    values = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, np.nan]], np.float32).repeat(3, axis=0)
    path = tmp_path / "flatfield.tif"
    tifffile.imwrite(path, values, imagej=True, metadata={"min": 0.0, "max": 2.0})
    got = model_ready_pixels(path, tmp_path)[..., 0]
    np.testing.assert_array_equal(got[0], [0, 0, 64, 128, 255, 255, 0])


def test_tiff_resolution_tags_give_the_pixel_size(tmp_path):
    path = tmp_path / "calibrated.tif"
    tifffile.imwrite(path, rgb(20, 30), photometric="rgb",
                     resolution=(1e4 / 0.8, 1e4 / 0.8), resolutionunit="CENTIMETER")
    assert source_pixel_size_um(path) == pytest.approx(0.8)
    plain = tmp_path / "plain.png"
    pyvips.Image.new_from_array(rgb(20, 30)).pngsave(str(plain))
    assert source_pixel_size_um(plain) is None


def test_a_tiff_whose_page_0_is_a_thumbnail_is_refused(tmp_path):
    """libvips (and so every job) reads page 0: a TIFF with an overview first and the
    micrograph after would be segmented at the overview's size, so it is refused saying what
    to do; stacks of equal pages, and pyramids whose later pages are smaller, still read."""
    a = rgb(300, 420)
    thumb_first = tmp_path / "overview-first.tif"
    with tifffile.TiffWriter(thumb_first) as tw:
        tw.write(a[::6, ::6].copy(), photometric="rgb")
        tw.write(a, photometric="rgb")
    with pytest.raises(ImageFormatError, match=r"overview-first.tif: page 0 of this TIFF is "
                       r"70 x 50 px but page 1 is 420 x 300 px.*save the micrograph alone"):
        source_info(thumb_first, max_pixels=MAX)
    with pytest.raises(ImageFormatError, match="page 0 of this TIFF"):
        read_rgb8(thumb_first, max_pixels=MAX)  # training data alike
    stack_pages = tmp_path / "stack.tif"
    with tifffile.TiffWriter(stack_pages) as tw:
        for z in range(3):
            tw.write(rgb(300, 420, seed=z), photometric="rgb")
    pyramid = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(pyramid) as tw:
        tw.write(a, photometric="rgb")
        tw.write(a[::2, ::2].copy(), photometric="rgb", subfiletype=1)
        tw.write(a[::4, ::4].copy(), photometric="rgb")
    for ok in (stack_pages, pyramid):
        assert (source_info(ok, max_pixels=MAX).width, source_info(ok, max_pixels=MAX).height) \
            == (420, 300)
    np.testing.assert_array_equal(read_rgb8(pyramid, max_pixels=MAX), a)
    # a stack's pages of page 0's size are counted (a job reads the first: a job warning);
    # a pyramid's reduced pages are not
    assert (source_info(stack_pages, max_pixels=MAX).planes,
            source_info(pyramid, max_pixels=MAX).planes) == (3, 1)


def test_an_ome_tiffs_z_planes_and_time_points_are_counted(tmp_path):
    pytest.importorskip("ome_types")
    path = tmp_path / "focus.ome.tif"
    tifffile.imwrite(path, np.stack([rgb(40, 50, seed=z)[..., 0] for z in range(6)]).reshape(
        3, 2, 40, 50), metadata={"axes": "TZYX"})
    info = source_info(path, max_pixels=MAX)
    assert (info.width, info.height, info.planes) == (50, 40, 6)
    np.testing.assert_array_equal(read_rgb8(path, max_pixels=MAX)[..., 0], rgb(40, 50)[..., 0])


def test_a_cielab_tiff_is_refused_as_a_colour_space_not_as_damage(tmp_path):
    """libvips reads a CIE L*a*b* TIFF as damaged ("bad labq format"); the refusal says what
    it is and what to save instead. CMYK TIFFs are converted (libvips' colour management)."""
    lab = tmp_path / "lab.tif"
    tifffile.imwrite(lab, rgb(40, 50), photometric="cielab")
    for read in (source_info, read_rgb8):
        with pytest.raises(ImageFormatError, match=r"lab.tif: a TIFF in CIE L\*a\*b\* colour "
                           r"\(PhotometricInterpretation 8\).*save the micrograph as RGB"):
            read(lab, max_pixels=MAX)
    cmyk = tmp_path / "cmyk.tif"
    tifffile.imwrite(cmyk, np.dstack([rgb(40, 50), rgb(40, 50, seed=1)[..., :1]]),
                     photometric="separated")
    assert read_rgb8(cmyk, max_pixels=MAX).shape == (40, 50, 3)


def test_unsupported_format_lists_what_is_supported(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    with pytest.raises(ImageFormatError) as err:
        source_info(path, max_pixels=MAX)
    assert "notes.txt: not a readable image" in str(err.value)
    assert SUPPORTED in str(err.value) and "Zeiss CZI" in SUPPORTED and "OME-TIFF" in SUPPORTED
    # a microscope's own format (a Leica .lif starts with 0x70, no format read here): what to do
    lif = tmp_path / "pellet 7.lif"
    lif.write_bytes(b"\x70\x00\x00\x00" + bytes(64))
    with pytest.raises(ImageFormatError) as err:
        source_info(lif, max_pixels=MAX)
    assert str(err.value).startswith("pellet 7.lif: not a readable image")
    assert "If it is a microscope's own format (Olympus/Evident .vsi, Leica .lif" in str(err.value)
    assert "bfconvert -series N -compression LZW IN OUT.ome.tif" in str(err.value)


def test_an_olympus_vsi_is_refused_rather_than_its_preview_read(tmp_path):
    """A cellSens .vsi is a TIFF holding a preview; its pixels are in .ets files of a folder
    beside it. Read as a TIFF, a job would segment the preview and succeed."""
    vsi = tmp_path / "Schliff 12.vsi"
    tifffile.imwrite(vsi, rgb(87, 128), photometric="rgb")  # the preview, as cellSens writes
    (tmp_path / "_Schliff 12_" / "stack1").mkdir(parents=True)
    with pytest.raises(ImageFormatError) as err:
        source_info(vsi, max_pixels=MAX)
    message = str(err.value)
    assert message.startswith("Schliff 12.vsi: an Olympus/Evident cellSens VSI file, whose TIFF "
                              "holds only a preview"), message
    assert "folder _Schliff 12_/" in message
    assert "bfconvert -series 0 -compression LZW Schliff 12.vsi Schliff 12.ome.tif" in message
    with pytest.raises(ImageFormatError):
        write_model_ready(vsi, tmp_path / "ready.tif", max_pixels=MAX)


def test_unsupported_bit_depth_says_which_are(tmp_path):
    path = tmp_path / "int32.tif"
    tifffile.imwrite(path, np.zeros((5, 5), np.int32))
    with pytest.raises(ImageFormatError, match=r"int32.tif: pixel format int.*16-bit signed or 32-bit float"):
        source_info(path, max_pixels=MAX)


def test_too_large_czi_is_refused_from_the_header(tmp_path):
    czi = pytest.importorskip("pylibCZIrw.czi")
    path = tmp_path / "big.czi"
    with czi.create_czi(str(path), exist_ok=True) as w:
        w.write(np.zeros((100, 100, 1), np.uint8), location=(0, 0))
    with pytest.raises(ImageFormatError, match=r"big.czi: 100 x 100 px = 10,000 px exceeds"):
        source_info(path, max_pixels=9_999)


def test_corrupt_tiff_error_has_no_bytes_literal(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, rgb(300, 300), photometric="rgb")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageFormatError) as err:
        write_model_ready(path, tmp_path / "out.tif", max_pixels=MAX)
    assert "b'" not in str(err.value) and "cut.tif" in str(err.value)


def test_ome_tiff_z_stack_reads_the_channels_of_the_first_plane(tmp_path):
    """Planes stored channel-major (axes CZYX: c0z0, c0z1, c0z2, c1z0, ...): the channels of
    Z 0 are pages 0, 3 and 6, not the first three pages."""
    pytest.importorskip("ome_types")
    stack = np.zeros((3, 3, 30, 40), np.uint8)
    for c in range(3):
        for z in range(3):
            stack[c, z] = 10 * z + c + 1
    path = tmp_path / "zstack.ome.tif"
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "CZYX"})
    got = model_ready_pixels(path, tmp_path)
    assert got.shape == (30, 40, 3)
    assert [np.unique(got[..., b]).tolist() for b in range(3)] == [[1], [2], [3]]


def test_a_plain_tiff_s_page_count_stops_at_the_pages_checked(tmp_path):
    """source_info counts a TIFF's same-size pages among the first PAGES_CHECKED only; the
    warning's text says where the count stopped ("256+")."""
    from imaging.formats.sources import PAGES_CHECKED

    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tw:
        for _ in range(PAGES_CHECKED + 4):
            tw.write(np.zeros((4, 6), np.uint8))
    info = source_info(path, max_pixels=MAX)
    assert (info.planes, info.planes_text) == (PAGES_CHECKED, f"{PAGES_CHECKED}+")
    three = dataclasses.replace(info, planes=3)
    assert three.planes_text == "3"
    assert dataclasses.replace(info, format="OME-TIFF").planes_text == str(PAGES_CHECKED)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_the_orientation_a_file_asks_viewers_for_is_read_and_the_pixels_are_left_as_stored(
        tmp_path, suffix):
    """EXIF (JPEG, PNG eXIf) or TIFF ``Orientation``: :attr:`SourceInfo.orientation` says it (a
    job warns), and the model-ready conversion keeps the stored pixels and size, unturned."""
    stored = pyvips.Image.black(64, 48).new_from_image([30, 120, 200]).cast("uchar")
    stored = stored.insert(pyvips.Image.black(8, 8, bands=3) + 255, 0, 0)  # a corner to track
    turned = stored.copy()
    turned.set_type(pyvips.GValue.gint_type, "orientation", 6)
    path, plain = tmp_path / f"turned{suffix}", tmp_path / f"plain{suffix}"
    turned.write_to_file(str(path))
    stored.write_to_file(str(plain))
    info = source_info(path, max_pixels=10**6)
    assert (info.orientation, info.width, info.height) == (6, 64, 48)
    assert source_info(plain, max_pixels=10**6).orientation == 1
    out = tmp_path / "ready.tif"
    write_model_ready(path, out, max_pixels=10**6)
    pixels = pyvips.Image.new_from_file(str(out)).numpy()
    assert pixels.shape == (48, 64, 3)
    assert pixels[:8, :8].min() > 200 and pixels[-8:, -8:].max() < 210  # the corner stays put


@pytest.mark.parametrize("compression,code,name", [("jpeg2000", 34712, "JPEG2000"),
                                                   ("jpegxl", 50002, "JPEGXL")])
@pytest.mark.parametrize("ome", [False, True])
def test_a_tiff_compressed_in_a_scheme_libtiff_lacks_is_refused_as_that_not_as_damage(
        tmp_path, compression, code, name, ome):
    """JPEG 2000 (as bfconvert -compression JPEG-2000 writes) and JPEG XL are in no libtiff:
    such a tiled RGB TIFF is not read by the rows directly, and its conversion fails saying
    which compression it is and how to save the file, not "truncated or corrupt"."""
    pytest.importorskip("imagecodecs")
    pixels = rgb(300, 400, seed=4)
    path = tmp_path / f"{compression}.{'ome.tif' if ome else 'tif'}"
    tifffile.imwrite(path, pixels, photometric="rgb", compression=compression, tile=(256, 256),
                     ome=ome)
    lzw = tmp_path / "lzw.tif"
    tifffile.imwrite(lzw, pixels, photometric="rgb", compression="lzw", tile=(256, 256))
    info = source_info(path, max_pixels=10**6)
    assert (info.compression, info.tiled, info.is_model_ready) == (code, True, False)
    assert source_info(lzw, max_pixels=10**6).is_model_ready
    with pytest.raises(ImageFormatError) as e:
        write_model_ready(path, tmp_path / "ready.tif", max_pixels=10**6)
    message = str(e.value)
    assert message.startswith(f"{path.name}, while converting it: its pixels are compressed "
                              f"with {name} (TIFF compression {code}), which this "
                              "installation's TIFF reader"), message
    assert "need not be damaged" in message and "-compression LZW" in message
    assert "truncated or corrupt" not in message


@pytest.mark.parametrize("extra,is_alpha", [(0, False), (1, True), (2, True)])
def test_a_tiffs_extra_band_is_no_data_only_where_it_is_alpha(tmp_path, extra, is_alpha):
    """RGB plus a fourth band: associated (1) or unassociated (2) alpha marks its 0s as no
    data; an unspecified extra sample (0: an infrared channel, a camera's own plane) is not
    transparency, and made no data of every pixel where it is 0 until 2026-12-07."""
    pixels = rgb(30, 40)
    fourth = np.full((30, 40, 1), 255, np.uint8)
    fourth[:12] = 0
    path = tmp_path / f"rgbx-{extra}.tif"
    tifffile.imwrite(path, np.concatenate([pixels, fourth], axis=2), photometric="rgb",
                     extrasamples=[extra])
    nodata = tmp_path / "nodata.tif"
    write_model_ready(path, tmp_path / "ready.tif", max_pixels=MAX, nodata_path=nodata)
    ready = pyvips.Image.new_from_file(str(tmp_path / "ready.tif")).numpy()
    if extra != 1:  # premultiplied colour is divided by its alpha; the others stay as stored
        np.testing.assert_array_equal(ready, pixels)
    if is_alpha:
        np.testing.assert_array_equal(read_nodata_rows(nodata, 0, 30), fourth[..., 0] == 0)
    else:
        assert not nodata.exists()


def test_a_12_bit_jpeg_is_refused_as_that_not_as_damage(tmp_path):
    """Some scientific cameras write 12-bit JPEGs, which libvips' libjpeg (8-bit) cannot
    decode: said so, with what to save it as, not "truncated or corrupt"."""
    imagecodecs = pytest.importorskip("imagecodecs")
    path = tmp_path / "camera12.jpg"
    samples = np.random.default_rng(0).integers(0, 4096, (64, 80), dtype=np.uint16)
    path.write_bytes(imagecodecs.jpeg8_encode(samples, bitspersample=12))
    try:
        write_model_ready(path, tmp_path / "ready.tif", max_pixels=MAX)
    except ImageFormatError as error:
        e = pytest.ExceptionInfo.from_exception(error)
    else:
        pytest.skip("this libvips decodes 12-bit JPEGs (libjpeg-turbo 3 with 12-bit support)")
    assert str(e.value).startswith("camera12.jpg, while converting it: a JPEG of 12 bits per "
                                   "sample, which this installation's JPEG reader"), e.value
    assert "16-bit TIFF or PNG" in str(e.value) and "truncated" not in str(e.value)


def test_the_scenes_of_an_ome_tiff_are_read_from_its_first_page_alone(tmp_path):
    """A Z-stack OME-TIFF of two scenes: its scenes come from the OME-XML of page 0, without
    reading the other pages' headers (through tifffile's series every 256 KiB block of this
    file was read, i.e. all of an upload on S3, in the API's request)."""
    import io

    path = tmp_path / "zstack.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        for seed in (1, 2):
            tw.write(np.stack([rgb(128, 128, seed=seed)] * 120), photometric="rgb",
                     tile=(64, 64), metadata={"axes": "ZYXS"})
    block = 256 * 1024
    touched: set[int] = set()

    class Counting(io.FileIO):
        def readinto(self, buffer):
            touched.add(self.tell() // block)
            return super().readinto(buffer)

        def read(self, size=-1):
            touched.add(self.tell() // block)
            return super().read(size)

    with Counting(path, "rb") as file:
        assert ome_scenes(file) == [0, 1]
    assert path.stat().st_size > 40 * block
    assert len(touched) <= 2, sorted(touched)
    assert ome_scenes(path) == source_scenes(path) == [0, 1]
