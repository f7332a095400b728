"""OME-TIFF: structure and metadata with tifffile and ome-types, pixels with libvips.

The full-resolution series is the OME Image a job names (its ``scene``, 0-based in file
order: :func:`ome_scenes` lists the scenes of a multi-image file) or else the one with the most
pixels at its level 0 (the first on ties); its level 0 is read (sub-resolution levels, SubIFD
or separate, are skipped). Channels stored as separate planes (``C`` of 2-4 without interleaved samples) are joined as
bands; only the first Z plane and time point are read. The pixel size is the Image's
``Pixels/@PhysicalSizeX`` converted from ``PhysicalSizeXUnit`` to µm; its significant bits
``Pixels/@SignificantBits``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyvips

from imaging.errors import ImageFormatError, SeveralScenesError
from imaging.integrity import FAIL_ON
from imaging.reading import _first_line  # libvips messages, paths as text

#: OME ``UnitsLength`` symbols -> µm.
UNIT_UM = {
    "pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "dm": 1e5,
    "m": 1e6, "in": 25_400.0, "mil": 25.4,
}


#: The option that gives a job its scene, as the refusal of an OME-TIFF of several scenes
#: names it (the CLI offers a rerun with it instead of a resume).
SCENE_OPTION = "--scene"

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
        planes: Z planes x time points of the Image (only the first of each is read).
        compression: TIFF ``Compression`` tag of the first page read (1 none, 5 LZW, 8
            deflate, 34712 JPEG 2000, ...), or None.
    """

    pages: tuple[int, ...]
    width: int
    height: int
    pixel_size_um: float | None
    series: int
    significant_bits: int | None = None
    planes: int = 1
    compression: int | None = None


def ome_pixel_size_um(pixels) -> float | None:
    """``PhysicalSizeX`` of an ome-types ``Pixels`` in µm/px, or None when absent, not positive
    or in an unknown unit."""
    size = pixels.physical_size_x
    if size is None or size <= 0:
        return None
    unit = getattr(pixels.physical_size_x_unit, "value", pixels.physical_size_x_unit) or "µm"
    factor = UNIT_UM.get(str(unit))
    return size * factor if factor is not None else None


def ome_scenes(path: str | os.PathLike | BinaryIO) -> list[int]:
    """The scenes of an OME-TIFF: indices of its OME Images with at least :data:`SCENE_SHARE`
    of the largest one's pixels at level 0 (one scene per pellet of a mount, e.g. a multi-scene
    CZI converted by bfconvert), in file order; ``[k]`` for a file of one image (beside its
    thumbnails, overviews or labels).

    Read from the OME-XML alone (each Image's ``Pixels`` ``SizeX`` x ``SizeY``): the first
    page's header and description, never the other pages' (tifffile's series of a Z-stack
    OME-TIFF read every 256 KiB block of the file, i.e. all of an upload on S3).

    Args:
        path: A local file, or a seekable binary file object (e.g. an upload in S3 opened
            through fsspec).

    Raises:
        ImageFormatError: not an OME-TIFF, or its OME-XML cannot be read.
    """
    import xml.etree.ElementTree as ET

    with _opened(path, parse_ome=False) as (tif, _):  # its errors name the file and the fix
        images = ET.fromstring(tif.ome_metadata).findall("{*}Image")
        areas = [int(p.get("SizeX")) * int(p.get("SizeY"))
                 for p in (image.find("{*}Pixels") for image in images)]
        if not areas:
            raise ImageFormatError(f"{_name(path)}: an OME-TIFF whose OME-XML names no image")
    return _scenes_of(areas)


def ome_layout(path: str | os.PathLike, scene: int | None = None) -> OmeLayout:
    """Locate the full-resolution series of an OME-TIFF and read its pixel size: the OME
    Image ``scene`` (0-based, in file order) when given, else the one with the most pixels
    (a thumbnail, overview or label Image beside it is skipped).

    Raises:
        ImageFormatError: not an OME-TIFF, its OME-XML cannot be parsed, more than 4
            channels, no Image ``scene``, or, with ``scene`` None, another Image of at least
            :data:`SCENE_SHARE` of the largest's pixels (several scenes: a job would read
            one and leave the others out; the message says how to pick each; a
            :class:`imaging.errors.SeveralScenesError` listing them).
    """
    name = Path(path).name
    with _opened(path) as (tif, ome):
        series = tif.series
        sizes = [f"{_yx(s.levels[0])[1]} x {_yx(s.levels[0])[0]}" for s in series]
        if scene is not None and not 0 <= scene < len(series):
            raise ImageFormatError(
                f"{name}: has no scene {scene}; its images are 0-{len(series) - 1} "
                f"({', '.join(sizes[:8])} px)")
        scenes = _scenes(series) if scene is None else [scene]
        if len(scenes) > 1:
            raise SeveralScenesError(
                f"{name}: an OME-TIFF of {len(scenes)} images of similar size "
                f"({', '.join(sizes[i] for i in scenes[:4])} px), e.g. one scene per pellet; a "
                "job reads one image and would leave the others out: give the scene to read "
                f"(one of {', '.join(map(str, scenes))}: {SCENE_OPTION} N, scene in the "
                f"API), or pelletseg run / submit the file with {SCENE_OPTION} all for one "
                "job per scene (one batch), or export each scene as its own file", scenes)
        best = scenes[0]  # the largest image, when it is the only scene
        level = series[best].levels[0]
        height, width = _yx(level)
        axes = level.axes
        channels = level.shape[axes.index("C")] if "C" in axes and "S" not in axes else 1
        if channels > 4:
            raise ImageFormatError(
                f"{name}: an OME-TIFF with {channels} channels; pelletseg reads grey, RGB "
                "or RGBA: export the brightfield channels"
            )
        first = level.pages[_plane(level, 0)]
        pages = tuple(level.pages[_plane(level, c)].index for c in range(channels))
        shape = dict(zip(axes, level.shape, strict=True))
        planes = shape.get("Z", 1) * shape.get("T", 1)
        images = ome.images  # tifffile makes one series per OME Image, in order
        pixels = images[best].pixels if best < len(images) else images[0].pixels
    return OmeLayout(pages, width, height, ome_pixel_size_um(pixels), best,
                     pixels.significant_bits, planes, int(first.compression))


def _name(path: str | os.PathLike | BinaryIO) -> str:
    """The file name of a path or of a file object (fsspec's name their file ``.path``,
    Python's ``.name``) for messages."""
    if isinstance(path, (str, os.PathLike)):
        return Path(path).name
    return Path(str(getattr(path, "path", None) or getattr(path, "name", "file"))).name


@contextmanager
def _opened(path: str | os.PathLike | BinaryIO, parse_ome: bool = True) -> Iterator[tuple]:
    """``(tifffile.TiffFile, ome_types.OME)`` of an OME-TIFF (a path or a seekable binary
    file object), closed on the way out; the second None without ``parse_ome``, for a caller
    that reads only a few attributes of the XML itself (:func:`ome_scenes`): ome-types' model
    of a 4.2 MB OME-XML (20,000 OriginalMetadata annotations, as bfconvert writes for a CZI)
    took 2.0 s (Zen 5, 2026-12-07).

    Raises:
        ImageFormatError: not an OME-TIFF, or its structure or OME-XML cannot be read (the
            ImageFormatErrors raised inside the block pass unchanged).
    """
    import tifffile
    from ome_types import from_xml

    name = _name(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.is_ome:
                raise ImageFormatError(f"{name}: not an OME-TIFF (no OME-XML in its first page)")
            yield tif, from_xml(tif.ome_metadata, validate=False) if parse_ome else None
    except ImageFormatError:
        raise
    except Exception as e:
        raise ImageFormatError(
            f"{name}: an OME-TIFF whose structure or OME-XML cannot be read ({e}); the file is "
            "truncated or corrupt: export it again"
        ) from e


def _scenes(series) -> list[int]:
    """:func:`_scenes_of` tifffile's series (their level-0 pixels)."""
    return _scenes_of([_yx(s.levels[0])[0] * _yx(s.levels[0])[1] for s in series])


def _scenes_of(areas: list[int]) -> list[int]:
    """Indices of the images with at least :data:`SCENE_SHARE` of the largest one's level-0
    pixels (``areas``, px), in file order (the one rule of :func:`ome_scenes` and
    :func:`ome_layout`)."""
    return [i for i, area in enumerate(areas) if area >= SCENE_SHARE * max(areas)]


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
        # fail_on as every source read (imaging.integrity): with "error", tiles libtiff cannot
        # decode (a JPEG 2000 compressed OME-TIFF; damaged tiles) read as black, no error
        planes = [pyvips.Image.new_from_file(str(path), page=p, access=access, fail_on=FAIL_ON)
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
