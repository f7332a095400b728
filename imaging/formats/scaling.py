"""The bit-depth rules of :mod:`imaging.reading` on numpy arrays, for the readers that decode
into numpy (CZI, OpenSlide): the same maps, so a 16-bit CZI and a 16-bit TIFF of the same
pixels give the same 8-bit input."""

from __future__ import annotations

import numpy as np

from imaging.errors import ImageFormatError
from imaging.reading import SUPPORTED_DEPTHS, significant_bits_of


def array_to_uint8(values: np.ndarray, value_range: tuple[float, float] | None = None,
                   significant_bits: int | None = None) -> np.ndarray:
    """Map samples onto uint8 by the module rules of :mod:`imaging.reading`.

    Args:
        values: Any shape; uint8, uint16, int16, float32 or float64.
        value_range: ``(lo, hi)`` for float arrays (required for them: one range per image).
        significant_bits: Of uint16 and int16 samples (8-16; None: 16 unsigned, 15 signed;
            at most those): ``min(max(v, 0) >> (b - 8), 255)``.

    Returns:
        uint8 array of the same shape.

    Raises:
        ImageFormatError: another dtype, or a float array without ``value_range``.
        ValueError: ``significant_bits`` outside 8-16.
    """
    dt = values.dtype
    if dt == np.uint8:
        return values
    if dt in (np.uint16, np.int16):
        bits = significant_bits_of(significant_bits, None, dt.name)
        if dt == np.int16:
            values = np.maximum(values, 0)
        return np.minimum(values >> (bits - 8), 255).astype(np.uint8)
    if dt in (np.float32, np.float64):
        if value_range is None:
            raise ImageFormatError("a float image needs its value range (lo, hi) to be scaled")
        lo, hi = value_range
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out = np.rint((values.astype(np.float64) - lo) * scale)
        out = np.nan_to_num(out, nan=0.0)
        return np.clip(out, 0, 255).astype(np.uint8)
    raise ImageFormatError(f"pixel type {dt} is not supported; pelletseg reads {SUPPORTED_DEPTHS}")


def band_range(values: np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` of the finite samples of a band, or None when it has none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


def merge_ranges(a: tuple[float, float] | None, b: tuple[float, float] | None):
    """The union of two ``(lo, hi)`` ranges (None is empty)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1])


def to_rgb(values: np.ndarray) -> np.ndarray:
    """(h, W) or (h, W, C) uint8 -> (h, W, 3): grey replicated, grey+alpha and RGBA lose
    alpha (the rules of :mod:`imaging.reading`).

    Raises:
        ImageFormatError: more than 4 channels.
    """
    if values.ndim == 2:
        values = values[..., None]
    c = values.shape[2]
    if c in (1, 2):
        return np.repeat(values[..., :1], 3, axis=2)
    if c in (3, 4):
        return values[..., :3]
    raise ImageFormatError(f"{c} channels are not supported; save the micrograph as grey, RGB or RGBA")
