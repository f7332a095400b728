"""Microscope and whole-slide source formats: which format a file is (:func:`sniff_format`),
its header, pixel size and scenes (:func:`source_info`, :func:`source_pixel_size_um`,
:func:`source_scenes`) and its
conversion to the model-ready tiled 8-bit RGB TIFF (:func:`write_model_ready`). OME-TIFF
through tifffile, ome-types and libvips; Zeiss CZI through pylibCZIrw; the whole-slide formats
OpenSlide reads through openslide-python (the ``[formats]`` extra); TIFF/BigTIFF, PNG and JPEG
through :mod:`imaging.reading`. Row bands are decoded one at a time (memory stays bounded).

May import: ``imaging.reading``, ``imaging.errors``, numpy, pyvips, tifffile, ome-types,
pylibCZIrw and openslide (the last two lazily: a missing ``[formats]`` extra gives a clear
error naming it).
"""

from imaging.formats.detect import SUPPORTED, sniff_format
from imaging.formats.ometiff import SCENE_OPTION
from imaging.formats.sources import (
    SIGNIFICANT_BITS_OPTION,
    SourceInfo,
    check_bit_depth,
    open_band_source,
    read_rgb8,
    source_info,
    source_pixel_size_um,
    source_scenes,
    write_model_ready,
)

__all__ = [
    "SCENE_OPTION",
    "SIGNIFICANT_BITS_OPTION",
    "SUPPORTED",
    "SourceInfo",
    "check_bit_depth",
    "open_band_source",
    "read_rgb8",
    "sniff_format",
    "source_info",
    "source_pixel_size_um",
    "source_scenes",
    "write_model_ready",
]
