"""Readers that decode row bands into numpy (CZI, OpenSlide) and the writer that turns their
bands into the model-ready tiled 8-bit RGB TIFF, never holding more than one band."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from imaging.display_range import clipped_range
from imaging.errors import ImageFormatError
from imaging.formats.scaling import array_to_uint8, band_range, merge_ranges, to_rgb
from imaging.reading import NODATA

#: Rows decoded at a time (px): one TIFF tile row of the output.
BAND_ROWS = 256


class BandSource(Protocol):
    """A source image read by row bands.

    Attributes:
        name: File name for messages.
        width, height: Size (px).
        bands: Samples per pixel (1 grey, 3 RGB, ...).
        dtype: numpy dtype name of the samples (``uint8``, ``uint16``, ``int16``, ``float32``).
        pixel_size_um: Pixel size (µm/px) from the file's metadata, or None.
        significant_bits: Significant bits per sample the file records (CZI
            ``ComponentBitCount``), or None.
        planes: Images of this size the file holds of which only the first is read (a CZI's
            Z planes x time points); 1 for slides.
    """

    name: str
    width: int
    height: int
    bands: int
    dtype: str
    pixel_size_um: float | None
    significant_bits: int | None
    planes: int

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)``: (y1 - y0, width, bands) array of ``dtype``, RGB order."""

    def nodata(self, y0: int, y1: int) -> np.ndarray | None:
        """Rows ``[y0, y1)`` of the no-data mask: (y1 - y0, width) bool, True where no image
        covers the pixel (a mosaic's empty areas, a slide's transparent ones); None when every
        pixel of these rows is covered."""

    def close(self) -> None:
        """Release the file."""


def value_range(source: BandSource) -> tuple[float, float] | None:
    """``(lo, hi)`` of a float source by :func:`imaging.display_range.clipped_range` (its
    finite samples' minimum and maximum bounded by their percentiles: the rule and the result of
    :func:`imaging.reading.float_range` for the same samples): one pass of bands for the
    minimum and maximum, then usually one more; None for integer sources."""
    if not source.dtype.startswith("float"):
        return None

    def bands():
        for y0 in range(0, source.height, BAND_ROWS):
            yield source.read(y0, min(source.height, y0 + BAND_ROWS))

    found = None
    for band in bands():
        found = merge_ranges(found, band_range(band))
    if found is None:
        return 0.0, 0.0
    return clipped_range(bands, *found)


def rgb8_bands(source: BandSource, rng: tuple[float, float] | None,
               significant_bits: int | None = None) -> Iterator[np.ndarray]:
    """The source as (h, width, 3) uint8 bands of :data:`BAND_ROWS` rows, top to bottom
    (``significant_bits`` of 16-bit samples as :func:`imaging.formats.scaling.array_to_uint8`)."""
    for y0 in range(0, source.height, BAND_ROWS):
        band = source.read(y0, min(source.height, y0 + BAND_ROWS))
        yield to_rgb(array_to_uint8(band, rng, significant_bits))


def write_bands_model_ready(source: BandSource, out_path: str | os.PathLike,
                            significant_bits: int | None = None,
                            nodata_path: str | os.PathLike | None = None) -> None:
    """Write ``source`` as a tiled (256 px), deflate-compressed 8-bit RGB BigTIFF (tifffile),
    band by band; float sources take one extra pass for their range. ``significant_bits``:
    of 16-bit samples (8-16; None: 16), as resolved by
    :func:`imaging.reading.significant_bits_of`. With ``nodata_path``, the source's no-data
    mask (:meth:`BandSource.nodata`) is written there as :func:`imaging.reading.write_nodata`
    writes one, where any pixel has no data (else no file); its bands with no-data pixels are
    held bit-packed meanwhile (W / 8 bytes per row).

    Raises:
        ImageFormatError: the pixel data cannot be decoded, or an unsupported sample type.
    """
    import tifffile

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part.tif")
    tile = BAND_ROWS
    packed: list[tuple[int, np.ndarray | None]] = []  # (rows, np.packbits of the mask or None)
    missing = False

    def tiles() -> Iterator[np.ndarray]:
        nonlocal missing
        for y0, band in zip(range(0, source.height, BAND_ROWS),
                            rgb8_bands(source, rng, significant_bits), strict=True):
            h = band.shape[0]
            if nodata_path is not None:
                mask = source.nodata(y0, y0 + h)
                missing = missing or mask is not None
                packed.append((h, None if mask is None else np.packbits(mask, axis=1)))
            for x0 in range(0, source.width, tile):
                t = np.zeros((tile, tile, 3), np.uint8)
                part = band[:, x0:x0 + tile]
                t[:h, :part.shape[1]] = part
                yield t

    try:
        rng = value_range(source)
        tifffile.imwrite(
            tmp, data=tiles(), shape=(source.height, source.width, 3), dtype=np.uint8,
            tile=(tile, tile), photometric="rgb", compression="zlib", bigtiff=True,
            metadata=None,
        )
    except ImageFormatError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ImageFormatError(
            f"{source.name}: pixel data cannot be decoded ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else 'unknown error'}); the file "
            "is truncated or corrupt: upload it again"
        ) from e
    if nodata_path is not None and missing:
        _write_packed_nodata(packed, source.width, source.height, Path(nodata_path))
    os.replace(tmp, out_path)


def _write_packed_nodata(packed: list[tuple[int, np.ndarray | None]], width: int, height: int,
                         path: Path) -> None:
    """Write the bands ``(rows, bit-packed (rows, ceil(W / 8)) mask or None: all imaged)`` of
    a no-data mask as the no-data TIFF of :func:`imaging.reading.write_nodata` (1 band, uint8,
    :data:`imaging.reading.NODATA` where no image covers the pixel, tiled 256 px, deflate),
    one band unpacked at a time."""
    import tifffile

    tile = BAND_ROWS

    def tiles() -> Iterator[np.ndarray]:
        for rows, bits in packed:
            band = (np.zeros((rows, width), np.uint8) if bits is None
                    else np.unpackbits(bits, axis=1, count=width).astype(np.uint8) * NODATA)
            for x0 in range(0, width, tile):
                t = np.zeros((tile, tile), np.uint8)
                part = band[:, x0:x0 + tile]
                t[:part.shape[0], :part.shape[1]] = part
                yield t

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.tif")
    tifffile.imwrite(tmp, data=tiles(), shape=(height, width), dtype=np.uint8,
                     tile=(tile, tile), photometric="minisblack", compression="zlib",
                     bigtiff=True, metadata=None)
    os.replace(tmp, path)
