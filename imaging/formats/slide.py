"""Whole-slide formats through OpenSlide (openslide-python with the openslide-bin library):
level 0 (full resolution) read in row bands; pixel size from ``openslide.mpp-x``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from imaging.errors import ImageFormatError


def _import():
    try:
        import openslide
    except (ImportError, OSError) as e:
        raise ImageFormatError(
            "reading whole-slide formats needs OpenSlide: install pelletseg[formats] "
            "(openslide-python and openslide-bin)"
        ) from e
    return openslide


class SlideSource:
    """An OpenSlide slide read by row bands of level 0 (see
    :class:`imaging.formats.bands.BandSource`): 3-band uint8 RGB; transparent pixels (no
    scanned data) take the slide's ``openslide.background-color`` (white if none).

    Raises:
        ImageFormatError: OpenSlide missing, or the file cannot be opened.
    """

    bands = 3
    dtype = "uint8"
    significant_bits = None
    planes = 1  # one level 0 image

    def __init__(self, path: str | os.PathLike):
        openslide = _import()
        self.name = Path(path).name
        self._error = openslide.OpenSlideError
        try:
            self._slide = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as e:
            raise ImageFormatError(
                f"{self.name}: a whole-slide file OpenSlide cannot open ({e}); the file is "
                "truncated or corrupt: export it again"
            ) from e
        self.width, self.height = self._slide.dimensions
        props = self._slide.properties
        try:
            mpp = float(props.get(openslide.PROPERTY_NAME_MPP_X, "nan"))
        except ValueError:
            mpp = float("nan")
        self.pixel_size_um = mpp if mpp > 0 else None
        colour = props.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR) or "FFFFFF"
        self._background = np.array([int(colour[i:i + 2], 16) for i in (0, 2, 4)], np.uint8)
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR)
        #: (y0, y1, transparent mask or None) of the last band read
        self._transparent: tuple[int | None, int | None, np.ndarray | None] = (None, None, None)

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` of level 0: (y1 - y0, width, 3) uint8 RGB."""
        try:
            rgba = np.asarray(self._slide.read_region((0, y0), 0, (self.width, y1 - y0)))
        except self._error as e:
            raise ImageFormatError(
                f"{self.name}, rows {y0}-{y1}: pixel data cannot be decoded ({e}); the file is "
                "truncated or corrupt: export it again"
            ) from e
        rgb = rgba[..., :3].copy()
        transparent = rgba[..., 3] == 0
        rgb[transparent] = self._background
        self._transparent = (y0, y1, transparent if transparent.any() else None)
        return rgb

    def nodata(self, y0: int, y1: int) -> np.ndarray | None:
        """Rows ``[y0, y1)`` of the transparent (unscanned) pixels of level 0: (y1 - y0,
        width) bool, or None when every pixel was scanned; from the last :meth:`read` of
        these rows, else read again."""
        if self._transparent[:2] != (y0, y1):
            self.read(y0, y1)
        return self._transparent[2]

    def close(self) -> None:
        """Close the slide."""
        self._slide.close()
