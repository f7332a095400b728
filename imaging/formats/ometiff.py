"""OME-TIFF: structure and metadata with tifffile and ome-types, pixels with libvips.

The full-resolution series is the OME Image with the most pixels at its level 0 (the first
on ties); its level 0 is read (sub-resolution levels, SubIFD or separate, are skipped).
Channels stored as separate planes (``C`` of 2-4 without interleaved samples) are joined as
bands; only the first Z plane and time point are read. The pixel size is the Image's
``Pixels/@PhysicalSizeX`` converted from ``PhysicalSizeXUnit`` to µm; its significant bits
``Pixels/@SignificantBits``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from imaging.errors import ImageFormatError
from imaging.reading import _first_line  # libvips messages, paths as text

#: OME ``UnitsLength`` symbols -> µm.
UNIT_UM = {
    "pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "dm": 1e5,
    "m": 1e6, "in": 25_400.0, "mil": 25.4,
}


#: A second OME Image with at least this share of the largest one's pixels makes the file
#: ambiguous (several scenes, not one image and its thumbnail or label): refused.
SCENE_SHARE = 0.25


@dataclass(frozen=True)
class OmeLayout:
    """Where the full-resolution planes of an OME-TIFF are.

    Attributes:
        pages: Top-level TIFF page indices joined as bands (one page when samples are
            interleaved or the image is grey).
        width, height: Level-0 size (px).
        pixel_size_um: ``PhysicalSizeX`` in µm/px, or None.
        series: Index of the OME Image read.
        significant_bits: ``Pixels/@SignificantBits`` (e.g. 12 for a 12-bit camera's uint16
            planes), or None.
    """

    pages: tuple[int, ...]
    width: int
    height: int
    pixel_size_um: float | None
    series: int
    significant_bits: int | None = None


def ome_pixel_size_um(pixels) -> float | None:
    """``PhysicalSizeX`` of an ome-types ``Pixels`` in µm/px, or None when absent, not positive
    or in an unknown unit."""
    size = pixels.physical_size_x
    if size is None or size <= 0:
        return None
    unit = getattr(pixels.physical_size_x_unit, "value", pixels.physical_size_x_unit) or "µm"
    factor = UNIT_UM.get(str(unit))
    return size * factor if factor is not None else None


def ome_layout(path: str | os.PathLike) -> OmeLayout:
    """Locate the full-resolution series of an OME-TIFF (the Image with the most pixels; a
    thumbnail, overview or label Image beside it is skipped) and read its pixel size.

    Raises:
        ImageFormatError: not an OME-TIFF, its OME-XML cannot be parsed, more than 4
            channels, or another Image of at least :data:`SCENE_SHARE` of the largest's pixels
            (several scenes: a job would read one and leave the others out).
    """
    import tifffile
    from ome_types import from_xml

    name = Path(path).name
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.is_ome:
                raise ImageFormatError(f"{name}: not an OME-TIFF (no OME-XML in its first page)")
            ome = from_xml(tif.ome_metadata, validate=False)
            series = tif.series
            areas = [_yx(s.levels[0])[0] * _yx(s.levels[0])[1] for s in series]
            best = max(range(len(series)), key=lambda i: (areas[i], -i))
            similar = [i for i, area in enumerate(areas)
                       if i != best and area >= SCENE_SHARE * areas[best]]
            if similar:
                sizes = ", ".join(f"{_yx(series[i].levels[0])[1]} x {_yx(series[i].levels[0])[0]}"
                                  for i in [best, *similar][:4])
                raise ImageFormatError(
                    f"{name}: an OME-TIFF of {1 + len(similar)} images of similar size "
                    f"({sizes} px), e.g. one scene per pellet; a job reads one image and would "
                    "leave the others out: export each image (scene) as its own file and submit "
                    "them together (one batch), or the whole mount as one image"
                )
            level = series[best].levels[0]
            height, width = _yx(level)
            axes = level.axes
            channels = level.shape[axes.index("C")] if "C" in axes and "S" not in axes else 1
            if channels > 4:
                raise ImageFormatError(
                    f"{name}: an OME-TIFF with {channels} channels; pelletseg reads grey, RGB "
                    "or RGBA: export the brightfield channels"
                )
            pages = tuple(level.pages[_plane(level, c)].index for c in range(channels))
            image_index = best  # tifffile makes one series per OME Image, in order
    except ImageFormatError:
        raise
    except Exception as e:
        raise ImageFormatError(
            f"{name}: an OME-TIFF whose structure or OME-XML cannot be read ({e}); the file is "
            "truncated or corrupt: export it again"
        ) from e
    images = ome.images
    pixels = images[image_index].pixels if image_index < len(images) else images[0].pixels
    return OmeLayout(pages, width, height, ome_pixel_size_um(pixels), best,
                     pixels.significant_bits)


def _plane(level, channel: int) -> int:
    """Index among ``level.pages`` of ``channel`` at the first Z plane and time point (pages
    are stored in the order of the series' leading axes, tifffile's ``axes``)."""
    lead = [(a, n) for a, n in zip(level.axes, level.shape, strict=True) if a not in "YXS"]
    if not lead:
        return 0
    index = [channel if a == "C" else 0 for a, _ in lead]
    return int(np.ravel_multi_index(index, [n for _, n in lead]))


def _yx(level) -> tuple[int, int]:
    shape = dict(zip(level.axes, level.shape, strict=True))
    return shape["Y"], shape["X"]


def open_ome(path: str | os.PathLike, layout: OmeLayout, *, access: str = "random") -> pyvips.Image:
    """The full-resolution planes of ``layout`` as one lazy libvips image (bands joined).

    Raises:
        ImageFormatError: libvips cannot read a page.
    """
    try:
        planes = [pyvips.Image.new_from_file(str(path), page=p, access=access, fail_on="error")
                  for p in layout.pages]
    except pyvips.Error as e:
        raise ImageFormatError(
            f"{Path(path).name}: OME-TIFF pixel data cannot be decoded "
            f"({_first_line(e)}); the file is truncated or corrupt: export it again"
        ) from e
    image = planes[0] if len(planes) == 1 else planes[0].bandjoin(planes[1:])
    if (image.width, image.height) != (layout.width, layout.height):
        raise ImageFormatError(
            f"{Path(path).name}: OME-TIFF page {layout.pages[0]} is {image.width}x{image.height} px "
            f"but its OME-XML says {layout.width}x{layout.height} px; the file is inconsistent"
        )
    return image
