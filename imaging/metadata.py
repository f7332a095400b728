"""Pixel size (µm/px) recorded in an image file: OME-XML ``PhysicalSizeX/Y`` and TIFF (or
JPEG/PNG) resolution tags with their unit, read through libvips' header (no pixels decoded).

Which records count, in order:

1. OME-XML (OME-TIFF's ``ImageDescription``): the first ``Pixels`` element's
   ``PhysicalSizeX``/``PhysicalSizeY`` with ``PhysicalSizeXUnit``/``PhysicalSizeYUnit``
   (default µm, as in the OME schema); lengths in pm..m and Å are converted to µm.
2. ImageJ's calibration (Fiji's Analyze > Set Scale, saved as TIFF): an ImageJ
   ``ImageDescription`` (``ImageJ=...``) whose ``unit=`` (and ``yunit=``, where it differs)
   names a length (``micron``, ``um``, ``µm`` or ImageJ's escaped ``\u00B5m``, ``nm``, ``mm``,
   ``cm``, ``m``), with ``XResolution``/``YResolution`` in pixels per that unit and
   ``ResolutionUnit`` none, as ImageJ's ``TiffEncoder`` writes them (inch and cm calibrations
   it writes with their own ``ResolutionUnit``: item 3). Without the resolution tags, or with
   ``unit=pixel`` (uncalibrated), it records nothing.
3. Resolution tags (``XResolution``/``YResolution``, pixels per ``ResolutionUnit``) when the
   unit is centimetre or inch, and a PNG's ``pHYs`` chunk (pixels per metre; where the PNG
   also carries EXIF resolution tags, as libvips writes, those). Resolutions of 300 dpi or
   less (118.1 px/cm, pixels of 84.7 µm or more) are ignored in any unit: they are the
   defaults that scanners, image editors and libvips (25.4 dpi) write without any
   calibration (72, 96, 150, 300 dpi), and no microscope has pixels that large. They reach
   centimetres when a converter rewrites the unit: libvips turns a 72 dpi JPEG into a TIFF
   of 28.35 px/cm, which would otherwise read as 352.8 µm/px. A file whose resolution unit
   is "none" carries no length and is ignored (unless ImageJ's description gives it one:
   item 2). libvips reads a ``pHYs`` chunk's values as pixels per metre whatever its unit
   byte says; the PNG standard's only other unit, "unknown", gives an aspect ratio (1:1, a
   few pixels per unit), which the threshold ignores. A PNG without ``pHYs`` reads as
   libvips' 72 dpi: ignored.

Anything else (no record, an unreadable or malformed record, a zero or negative size) gives
None: the caller then uses the job's own pixel size or reports in px.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from typing import NamedTuple

import pyvips

__all__ = [
    "INCH_DPI_UNCALIBRATED",
    "RecordedPixelSize",
    "pixel_size_from_imagej",
    "pixel_size_from_ome_xml",
    "read_pixel_size",
    "read_pixel_size_um",
]

#: Resolutions at or below this (dots per inch, in either unit) are uncalibrated defaults.
INCH_DPI_UNCALIBRATED = 300.0

#: µm per unit of the OME ``UnitsLength`` symbols pelletseg accepts.
_OME_UNITS_UM = {
    "pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "µm": 1.0, "μm": 1.0, "um": 1.0, "mm": 1e3,
    "cm": 1e4, "dm": 1e5, "m": 1e6,
}

#: µm per unit of the ImageJ ``unit=`` values that are lengths (ImageJ writes ``micron`` and
#: escapes non-ASCII text as ``\uXXXX``; its unit menu also offers the OME symbols).
_IMAGEJ_UNITS_UM = {
    **_OME_UNITS_UM, "micron": 1.0, "microns": 1.0, "\\u00B5m": 1.0, "\\u00b5m": 1.0,
    "nanometer": 1e-3, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6,
}


def _positive(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) and v > 0 else None


def _ome_length_um(value: str | None, unit: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    factor = _OME_UNITS_UM.get(unit or "µm")
    return None if factor is None else _positive(number * factor)


def pixel_size_from_ome_xml(text: str, image: int = 0) -> tuple[float, float] | None:
    """(x, y) pixel size in µm/px from an OME-XML document, or None.

    Reads the ``Pixels`` element of the ``image``-th ``Image`` (0-based, the first by default;
    any OME namespace version; a document without ``Image`` elements: its first ``Pixels``;
    none when it has no Image ``image``); a missing
    ``PhysicalSizeY`` takes ``PhysicalSizeX`` (square pixels) and vice versa. Units other
    than pm, Å, nm, µm, mm, cm, dm and m (e.g. pixels, reference frame) give None.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    images = [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Image"]
    if images and image >= len(images):
        return None
    within = images[image] if images else root
    pixels = next((e for e in within.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    x = _ome_length_um(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"))
    y = _ome_length_um(pixels.get("PhysicalSizeY"), pixels.get("PhysicalSizeYUnit"))
    if x is None and y is None:
        return None
    return (x if x is not None else y, y if y is not None else x)


def pixel_size_from_imagej(description: str, xres: float | None,
                           yres: float | None) -> tuple[float, float] | None:
    """(x, y) pixel size in µm/px from an ImageJ TIFF's calibration, or None.

    Args:
        description: The TIFF's ``ImageDescription``; only an ImageJ one (``ImageJ=...``
            first) counts.
        xres, yres: ``XResolution`` and ``YResolution`` (pixels per ImageJ unit), None where
            the tag is absent.

    Returns:
        ``(1 / xres, 1 / yres)`` in µm/px, where ``unit=`` (``yunit=`` for y where present)
        is a length of :data:`_IMAGEJ_UNITS_UM` and both resolutions are positive; else
        None (``unit=pixel``: an uncalibrated image).
    """
    if not description.startswith("ImageJ="):
        return None
    fields = dict(line.split("=", 1) for line in description.splitlines() if "=" in line)
    x_unit = _IMAGEJ_UNITS_UM.get(fields.get("unit", "").strip())
    y_unit = _IMAGEJ_UNITS_UM.get(fields.get("yunit", fields.get("unit", "")).strip())
    if x_unit is None or y_unit is None or not xres or not yres:
        return None
    x, y = _positive(x_unit / xres), _positive(y_unit / yres)
    return (x, y) if x is not None and y is not None else None


def _tiff_resolution(path: str | os.PathLike) -> tuple[float | None, float | None]:
    """``XResolution`` and ``YResolution`` of a TIFF's page 0 as written (None where absent
    or unreadable): libvips gives 1.0 for an absent one, which ImageJ's calibration must not
    read as 1 px per unit."""
    import tifffile

    def value(page, code):
        tag = page.tags.get(code)
        if tag is None:
            return None
        v = tag.value
        return float(v[0]) / float(v[1]) if isinstance(v, tuple) and v[1] else None

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return value(page, 282), value(page, 283)
    except Exception:  # damaged: the pixels' reader reports it
        return None, None


class RecordedPixelSize(NamedTuple):
    """A pixel size the file records, and which record gave it."""

    #: µm/px along x and y (both > 0).
    x_um: float
    y_um: float
    #: The record, in words for a report: ``OME-XML PhysicalSizeX/Y``, ``ImageJ
    #: calibration``, ``resolution tags, 600 dpi``, ``resolution tags, 20000 px/cm``,
    #: ``PNG pHYs chunk, 2e+06 px/m``.
    record: str


def read_pixel_size_um(path: str | os.PathLike,
                       ome_image: int = 0) -> tuple[float, float] | None:
    """Pixel size (x, y) in µm/px recorded in the image file at ``path``, or None
    (:func:`read_pixel_size` without the record's name)."""
    found = read_pixel_size(path, ome_image)
    return None if found is None else (found.x_um, found.y_um)


def read_pixel_size(path: str | os.PathLike, ome_image: int = 0) -> RecordedPixelSize | None:
    """Pixel size in µm/px recorded in the image file at ``path``, with the record it came
    from, or None.

    See the module docstring for the records read and the uncalibrated defaults ignored; of
    an OME-TIFF, the OME Image ``ome_image`` 's (0-based; a job's scene). Only the header is
    read (libvips opens the file lazily).

    Returns:
        The size (both axes > 0) and its record, or None when the file records no
        calibration or cannot be opened (the reader of the pixels reports that error).
    """
    try:
        image = pyvips.Image.new_from_file(os.fspath(path))
    except pyvips.Error:
        return None
    fields = set(image.get_fields())
    if "image-description" in fields:
        text = image.get("image-description")
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if "<OME" in text:
            found = pixel_size_from_ome_xml(text.strip(), ome_image)
            if found is not None:
                return RecordedPixelSize(*found, "OME-XML PhysicalSizeX/Y")
    unit = image.get("resolution-unit") if "resolution-unit" in fields else None
    if unit is None and "image-description" in fields and text.startswith("ImageJ="):
        found = pixel_size_from_imagej(text, *_tiff_resolution(path))
        return None if found is None else RecordedPixelSize(*found, "ImageJ calibration")
    if unit is None and image.get("vips-loader") == "pngload":
        unit = "m"  # pHYs: pixels per metre
    if unit not in ("cm", "in", "m"):
        return None
    xres, yres = float(image.xres), float(image.yres)  # libvips: pixels per mm, any unit
    if max(xres, yres) * 25.4 <= INCH_DPI_UNCALIBRATED * (1 + 1e-6):  # a default, any unit
        return None
    x = _positive(1000.0 / xres) if xres > 0 else None
    y = _positive(1000.0 / yres) if yres > 0 else None
    if x is None or y is None:
        return None
    per_mm = max(xres, yres)
    record = {"in": f"resolution tags, {per_mm * 25.4:.6g} dpi",
              "cm": f"resolution tags, {per_mm * 10:.6g} px/cm",
              "m": f"PNG pHYs chunk, {per_mm * 1000:.6g} px/m"}[unit]
    return RecordedPixelSize(x, y, record)
