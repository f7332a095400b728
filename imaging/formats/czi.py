"""Zeiss CZI through pylibCZIrw (Zeiss' libCZI): the whole mosaic (all scenes' bounding
rectangle) at full resolution, read in row bands through libCZI's tile compositor with a
bounded sub-block cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from imaging.errors import ImageFormatError

#: Sub-block cache of the reader (bytes of compressed sub-blocks kept between bands).
CACHE_BYTES = 256 << 20
#: libCZI pixel type -> (numpy dtype, channels, stored as BGR).
PIXEL_TYPES = {
    "Gray8": ("uint8", 1, False),
    "Gray16": ("uint16", 1, False),
    "Gray32Float": ("float32", 1, False),
    "Bgr24": ("uint8", 3, True),
    "Bgr48": ("uint16", 3, True),
    "Bgr96Float": ("float32", 3, True),
}


def _import():
    try:
        from pylibCZIrw import czi
    except ImportError as e:
        raise ImageFormatError(
            "reading Zeiss CZI needs pylibCZIrw: install pelletseg[formats]"
        ) from e
    return czi


def czi_pixel_size_um(metadata: dict) -> float | None:
    """X pixel size (µm/px) from CZI metadata (``ImageDocument/Metadata/Scaling/Items/
    Distance[@Id=X]/Value``, in metres by the CZI specification), or None when absent or 0."""
    try:
        items = metadata["ImageDocument"]["Metadata"]["Scaling"]["Items"]["Distance"]
    except (KeyError, TypeError):
        return None
    items = items if isinstance(items, list) else [items]
    for item in items:
        if item.get("@Id") == "X":
            try:
                metres = float(item.get("Value"))
            except (TypeError, ValueError):
                return None
            return metres * 1e6 if metres > 0 else None
    return None


def czi_significant_bits(metadata: dict) -> int | None:
    """Significant bits per sample from CZI metadata (``ImageDocument/Metadata/Information/
    Image/ComponentBitCount``, else the first channel's ``Dimensions/Channels/Channel/
    ComponentBitCount``: ZEN writes e.g. 12 or 14 for a camera's Gray16 / Bgr48 data), or None
    when absent or not a number."""
    try:
        image = metadata["ImageDocument"]["Metadata"]["Information"]["Image"]
    except (KeyError, TypeError):
        return None
    found = image.get("ComponentBitCount") if isinstance(image, dict) else None
    if found is None:
        try:
            channels = image["Dimensions"]["Channels"]["Channel"]
            channel = channels[0] if isinstance(channels, list) else channels
            found = channel.get("ComponentBitCount")
        except (KeyError, TypeError, IndexError, AttributeError):
            return None
    try:
        return int(str(found).strip())
    except (TypeError, ValueError):
        return None


class CziSource:
    """A CZI file read by row bands (see :class:`imaging.formats.bands.BandSource`).

    Only the first channel, Z plane and time point are read; the mosaic of all scenes is
    composed at full resolution (zoom 1), empty areas black.

    Raises:
        ImageFormatError: pylibCZIrw missing, the file cannot be opened, more than one
            channel, or a pixel type outside :data:`PIXEL_TYPES`.
    """

    def __init__(self, path: str | os.PathLike, cache_bytes: int = CACHE_BYTES):
        czi = _import()
        self.name = Path(path).name
        try:
            self._doc = czi.CziReader(
                str(path), cache_options=czi.CacheOptions(max_memory_usage=cache_bytes)
            )
        except Exception as e:
            raise ImageFormatError(
                f"{self.name}: a CZI file that cannot be opened ({str(e).strip() or type(e).__name__}); "
                "the file is truncated or corrupt: export it again"
            ) from e
        try:
            box = self._doc.total_bounding_box
            if box.get("C", (0, 1))[1] - box.get("C", (0, 1))[0] > 1:
                raise ImageFormatError(
                    f"{self.name}: a CZI with {box['C'][1] - box['C'][0]} channels; pelletseg "
                    "reads one (grey or colour) channel: export the brightfield channel"
                )
            pixel_type = self._doc.pixel_types[0]
            if pixel_type not in PIXEL_TYPES:
                raise ImageFormatError(
                    f"{self.name}: CZI pixel type {pixel_type} is not supported; pelletseg "
                    f"reads {', '.join(PIXEL_TYPES)}"
                )
            z, t = (box.get(axis, (0, 1)) for axis in ("Z", "T"))
            self.planes = max(1, z[1] - z[0]) * max(1, t[1] - t[0])  # the first is read
            rect = self._doc.total_bounding_rectangle
            self._x, self._y = rect.x, rect.y
            self.width, self.height = rect.w, rect.h
            self.dtype, self.bands, self._bgr = PIXEL_TYPES[pixel_type]
            metadata = self._doc.metadata
            self.pixel_size_um = czi_pixel_size_um(metadata)
            self.significant_bits = czi_significant_bits(metadata)
            self._covered: list[tuple[int, int, int, int]] = []  # x, y, w, h in image px

            def cover(_index, info) -> bool:
                r = info.logicalRect
                self._covered.append((r.x - self._x, r.y - self._y, r.w, r.h))
                return True

            self._doc.enumerate_subblocks(cover)
        except BaseException:
            self.close()
            raise

    def nodata(self, y0: int, y1: int) -> np.ndarray | None:
        """Rows ``[y0, y1)`` of the pixels no sub-block covers (the mosaic's empty areas
        between scenes or tile regions, read as black): (y1 - y0, width) bool, or None when
        sub-blocks cover every pixel of these rows."""
        mask = np.ones((y1 - y0, self.width), bool)
        for x, y, w, h in self._covered:
            top, bottom = max(y, y0), min(y + h, y1)
            if top < bottom:
                mask[top - y0:bottom - y0, max(x, 0):max(x + w, 0)] = False
        return mask if mask.any() else None

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)``: (y1 - y0, width, bands) array, RGB order."""
        try:
            data = self._doc.read(
                roi=(self._x, self._y + y0, self.width, y1 - y0), plane={"C": 0, "Z": 0, "T": 0}
            )
        except Exception as e:
            raise ImageFormatError(
                f"{self.name}, rows {y0}-{y1}: CZI pixel data cannot be decoded ({e}); the file "
                "is truncated or corrupt: export it again"
            ) from e
        if self._bgr:
            data = data[..., ::-1]
        return np.ascontiguousarray(data)

    def close(self) -> None:
        """Close the file."""
        doc, self._doc = getattr(self, "_doc", None), None
        if doc is not None:
            doc.close()
