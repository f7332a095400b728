"""Pixel size read from image files: resolution tags with their unit, OME-XML, and the
uncalibrated defaults that must not pass for a calibration."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from imaging.metadata import (
    pixel_size_from_imagej,
    pixel_size_from_ome_xml,
    read_pixel_size,
    read_pixel_size_um,
)

OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


def _tiny() -> pyvips.Image:
    return pyvips.Image.new_from_array(np.zeros((4, 6), np.uint8))


def _ome(pixels_attrs: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{OME_NS}">'
            f'<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint8" '
            f'SizeX="6" SizeY="4" SizeZ="1" SizeC="1" SizeT="1" {pixels_attrs}/></Image></OME>')


def _with_description(text: str) -> pyvips.Image:
    image = _tiny().copy()
    image.set_type(pyvips.GValue.gstr_type, "image-description", text)
    return image


def test_centimetre_resolution(tmp_path):
    path = tmp_path / "cm.tif"
    # 20 000 px/cm in x (0.5 µm/px), 10 000 px/cm in y (1 µm/px); libvips takes px/mm
    _tiny().tiffsave(str(path), xres=2000.0, yres=1000.0, resunit="cm")
    x, y = read_pixel_size_um(path)
    assert x == pytest.approx(0.5)
    assert y == pytest.approx(1.0)
    assert read_pixel_size(path).record == "resolution tags, 20000 px/cm"  # the finer axis


def test_inch_resolution_above_default_dpi(tmp_path):
    path = tmp_path / "in.tif"
    dpi = 25400.0  # 1 µm/px
    _tiny().tiffsave(str(path), xres=dpi / 25.4, yres=dpi / 25.4, resunit="inch")
    x, y = read_pixel_size_um(path)
    assert x == pytest.approx(1.0, rel=1e-6)
    assert y == pytest.approx(1.0, rel=1e-6)
    # the record says the dpi: an image editor's 600 or 1200 dpi reads as 42.3 or 21.2 µm/px,
    # and a report naming it lets that be told from a microscope's calibration
    assert read_pixel_size(path).record == "resolution tags, 25400 dpi"


@pytest.mark.parametrize("dpi", [72.0, 96.0, 300.0])
def test_default_dpi_in_inches_is_no_calibration(tmp_path, dpi):
    path = tmp_path / "dpi.tif"
    _tiny().tiffsave(str(path), xres=dpi / 25.4, yres=dpi / 25.4, resunit="inch")
    assert read_pixel_size_um(path) is None


@pytest.mark.parametrize("dpi", [72.0, 96.0, 300.0])
def test_default_dpi_rewritten_in_centimetres_is_no_calibration(tmp_path, dpi):
    """A 72 dpi JPEG converted by libvips becomes a TIFF of 28.35 px/cm: not 352.8 µm/px."""
    path = tmp_path / "dpi-cm.tif"
    _tiny().tiffsave(str(path), xres=dpi / 25.4, yres=dpi / 25.4, resunit="cm")
    assert read_pixel_size_um(path) is None


def test_a_72_dpi_jpeg_saved_as_tiff_by_libvips_has_no_pixel_size(tmp_path):
    jpeg, tiff = tmp_path / "m.jpg", tmp_path / "m.tif"
    _tiny().copy(interpretation="srgb").jpegsave(str(jpeg))
    image = pyvips.Image.new_from_file(str(jpeg)).copy(xres=72 / 25.4, yres=72 / 25.4)
    image.tiffsave(str(tiff))
    assert pyvips.Image.new_from_file(str(tiff)).get("resolution-unit") in ("cm", "in")
    assert read_pixel_size_um(tiff) is None


def test_libvips_default_is_no_calibration(tmp_path):
    plain, cm = tmp_path / "plain.tif", tmp_path / "cm1.tif"
    _tiny().tiffsave(str(plain))  # libvips writes 1 px/mm in inches (25.4 dpi)
    _tiny().tiffsave(str(cm), resunit="cm")  # 1 px/mm, now in centimetres
    assert read_pixel_size_um(plain) is None
    assert read_pixel_size_um(cm) is None


def test_ome_xml_physical_size_with_units(tmp_path):
    path = tmp_path / "ome.tif"
    _with_description(_ome('PhysicalSizeX="650" PhysicalSizeXUnit="nm" '
                           'PhysicalSizeY="0.7" PhysicalSizeYUnit="µm"')).tiffsave(str(path))
    x, y = read_pixel_size_um(path)
    assert x == pytest.approx(0.65)
    assert y == pytest.approx(0.7)


def test_ome_xml_wins_over_resolution_tags(tmp_path):
    path = tmp_path / "both.tif"
    _with_description(_ome('PhysicalSizeX="0.25" PhysicalSizeY="0.25"')).tiffsave(
        str(path), xres=2000.0, yres=2000.0, resunit="cm")
    assert read_pixel_size_um(path) == pytest.approx((0.25, 0.25))
    assert read_pixel_size(path).record == "OME-XML PhysicalSizeX/Y"


def test_ome_xml_default_unit_and_one_axis():
    assert pixel_size_from_ome_xml(_ome('PhysicalSizeX="1.5"')) == (1.5, 1.5)
    assert pixel_size_from_ome_xml(_ome('PhysicalSizeY="2" PhysicalSizeYUnit="mm"')) == (
        2000.0, 2000.0)


@pytest.mark.parametrize("attrs", ['', 'PhysicalSizeX="0"', 'PhysicalSizeX="-1"',
                                   'PhysicalSizeX="abc"',
                                   'PhysicalSizeX="3" PhysicalSizeXUnit="pixel"'])
def test_ome_xml_without_usable_size(attrs):
    assert pixel_size_from_ome_xml(_ome(attrs)) is None


def test_malformed_ome_xml_falls_back_to_resolution(tmp_path):
    assert pixel_size_from_ome_xml("<OME><Pixels") is None
    path = tmp_path / "bad-ome.tif"
    _with_description("<OME broken").tiffsave(str(path), xres=1000.0, yres=1000.0,
                                              resunit="cm")
    assert read_pixel_size_um(path) == pytest.approx((1.0, 1.0))


def test_unreadable_or_uncalibrated_formats(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not an image")
    png = tmp_path / "plain.png"
    _tiny().pngsave(str(png))
    assert read_pixel_size_um(junk) is None
    assert read_pixel_size_um(tmp_path / "missing.tif") is None
    assert read_pixel_size_um(png) is None


@pytest.mark.parametrize("um", [0.25, 1.2, 50.0])
def test_png_phys_chunk_in_pixels_per_metre(tmp_path, um):
    """A PNG whose only calibration is its pHYs chunk (no EXIF), as image libraries other than
    libvips write one: pixels per metre."""
    path = tmp_path / "phys.png"
    _tiny().copy(xres=1000.0 / um, yres=1000.0 / (2 * um)).pngsave(str(path), keep="none")
    header = pyvips.Image.new_from_file(str(path))
    assert "resolution-unit" not in header.get_fields()  # nothing but pHYs records it
    assert read_pixel_size_um(path) == pytest.approx((um, 2 * um), rel=1e-5)
    assert read_pixel_size(path).record == f"PNG pHYs chunk, {1e6 / um:.6g} px/m"


@pytest.mark.parametrize("per_metre", [1, 2835, 3780, 11811])
def test_png_phys_aspect_ratio_or_default_dpi_is_no_calibration(tmp_path, per_metre):
    """pHYs values of an aspect ratio (unit unknown, 1 per unit) or of 72, 96, 300 dpi."""
    path = tmp_path / "dpi.png"
    _tiny().copy(xres=per_metre / 1000, yres=per_metre / 1000).pngsave(str(path), keep="none")
    assert read_pixel_size_um(path) is None


def _imagej_tiff(path, description: str, resolution):
    """A TIFF as ImageJ's TiffEncoder writes a calibrated image: its description, the
    resolution in pixels per unit, ResolutionUnit none."""
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(path, np.zeros((4, 6), np.uint8), description=description, metadata=None,
                     resolution=resolution, resolutionunit=1)
    return path


@pytest.mark.parametrize("unit, um", [("micron", 0.5), ("um", 0.5), ("\\u00B5m", 0.5),
                                      ("nm", 0.0005), ("mm", 500.0)])
def test_an_imagej_calibration_gives_the_pixel_size(tmp_path, unit, um):
    """Fiji's Analyze > Set Scale saved as TIFF: 2 px per unit of ``unit=`` (ImageJ escapes µ
    as \\u00B5: a TIFF description is ASCII), ResolutionUnit none, which alone carries no
    length."""
    path = _imagej_tiff(tmp_path / "fiji.tif", f"ImageJ=1.54f\nunit={unit}\n", (2.0, 2.0))
    assert read_pixel_size_um(path) == pytest.approx((um, um))
    assert read_pixel_size(path).record == "ImageJ calibration"


def test_an_imagej_y_unit_of_its_own_and_non_square_pixels(tmp_path):
    path = _imagej_tiff(tmp_path / "fiji.tif", "ImageJ=1.54f\nunit=micron\nyunit=nm\n",
                        resolution=(2.0, 0.5))
    assert read_pixel_size_um(path) == pytest.approx((0.5, 0.002))


@pytest.mark.parametrize("description, resolution", [
    ("ImageJ=1.54f\nunit=pixel\n", (2.0, 2.0)),  # uncalibrated
    ("ImageJ=1.54f\nunit=furlong\n", (2.0, 2.0)),  # not a length pelletseg knows
    ("made by a script\nunit=micron\n", (2.0, 2.0)),  # not ImageJ's description
])
def test_what_is_not_an_imagej_calibration_gives_none(tmp_path, description, resolution):
    path = _imagej_tiff(tmp_path / "plain.tif", description, resolution)
    assert read_pixel_size_um(path) is None


def test_an_imagej_unit_without_resolution_tags_gives_none():
    """libvips reads an absent XResolution as 1.0: the tags as written are asked for."""
    assert pixel_size_from_imagej("ImageJ=1.54f\nunit=micron\n", None, None) is None
    assert pixel_size_from_imagej("ImageJ=1.54f\nunit=micron\n", 4.0, 0.0) is None
    assert pixel_size_from_imagej("ImageJ=1.54f\nunit=micron\n", 4.0, 4.0) == (0.25, 0.25)


def test_an_imagej_description_beside_a_centimetre_unit_keeps_the_tags_rule(tmp_path):
    """ImageJ writes inch and cm calibrations with their own ResolutionUnit: read by it."""
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, np.zeros((4, 6), np.uint8), description="ImageJ=1.54f\nunit=cm\n",
                     metadata=None, resolution=(20000.0, 20000.0), resolutionunit=3)
    assert read_pixel_size_um(path) == pytest.approx((0.5, 0.5))
