"""Images with libvips, by region, never whole in memory: reading and checking a source and
converting it to 8-bit RGB (:mod:`imaging.reading`), microscope and whole-slide formats
(:mod:`imaging.formats`: OME-TIFF, Zeiss CZI, OpenSlide); the uint8 label strips of row
checkpoints and their stitching into one pyramidal label map (:mod:`imaging.stitching`); the
pyramidal OME-TIFF outputs and their levels (:mod:`imaging.ome`); the colour overlay and the
preview (:mod:`imaging.rendering`); the palette (:mod:`imaging.palette`); and demo mosaics of
the shipped samples (:mod:`imaging.mosaic`); the pixel size (µm/px) a file
records (:mod:`imaging.metadata`); the display range of float images (:mod:`imaging.display_range`).

May import: ``core``, ``storage.blobs.layout`` (output file names), pyvips, numpy, tifffile
and ome-types (pylibCZIrw and openslide lazily, from ``[formats]``); never torch, ``worker``,
``training`` or ``api`` (the API's viewer uses it too).
"""

from imaging.errors import ImageFormatError
from imaging.metadata import read_pixel_size_um
from imaging.palette import palette_lut
from imaging.reading import ImageInfo, image_info, image_rows, open_image, read_rows, to_rgb8
from imaging.stitching import StripStream, read_strip, write_label_pyramid, write_strip

__all__ = [
    "ImageFormatError",
    "ImageInfo",
    "StripStream",
    "image_info",
    "image_rows",
    "open_image",
    "palette_lut",
    "read_pixel_size_um",
    "read_rows",
    "read_strip",
    "to_rgb8",
    "write_label_pyramid",
    "write_strip",
]
