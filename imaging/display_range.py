"""The range ``(lo, hi)`` a float image is mapped onto 0..255 by, where the file gives none.

Its finite samples' minimum and maximum, but never more than :data:`REACH` of the central
range beyond it: with ``p_lo, p_hi`` the 0.01st and 99.99th percentiles of the finite samples
(:data:`CLIPPED` at each end), ``lo = max(min, p_lo - REACH * (p_hi - p_lo))`` and ``hi =
min(max, p_hi + REACH * (p_hi - p_lo))``. An image whose extremes lie near its bulk (a
well-exposed field: its darkest and brightest pixels are within a quarter of its central range
of the percentiles) keeps its minimum and maximum, as before 2026-12-07; a few extreme samples
no longer set the range: a flat-field-corrected image (a division by the flat) with a handful
of hot pixels where the flat is nearly zero mapped everything else to black before, and its
labels were one phase. Percentile normalisation is how microscopy deep learning maps float
images (CSBDeep / CARE: Weigert et al., "Content-aware image restoration", Nature Methods 15,
1090 (2018), with percentiles 1 and 99.8); here it only bounds the minimum and maximum, so
the map of an image without outliers does not change.

One algorithm on numpy strips, used by both readers (:func:`imaging.reading.float_range` on
libvips images, :func:`imaging.formats.bands.value_range` on CZI and OpenSlide sources), so
the same samples give the same range: exact histograms of :data:`BINS` bins over a window
that narrows until the percentiles are known to 1 / :data:`RESOLUTION` of their span (one pass
for the minimum and maximum and one histogram for a usual image, one more histogram per factor
of ~65536 an outlier lies beyond the rest).

May import: numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

#: Fraction of the finite samples below the low percentile, and again above the high one. An
#: image of fewer than 1 / CLIPPED (10,000) samples keeps its minimum and maximum.
CLIPPED = 1e-4
#: How far beyond the percentiles, as a fraction of their span, the range may reach towards
#: the minimum and maximum.
REACH = 0.25
#: Bins of each histogram pass.
BINS = 65536
#: Passes stop once the percentiles' window spans this many bins (its edges are then within
#: 1/RESOLUTION of the span of the true percentiles).
RESOLUTION = 4096
#: Histogram passes at most: each narrows the window by a factor of up to BINS, so 10 find
#: the percentiles of data within 1 of outliers at 1e30 (float32's largest is 3.4e38); after
#: them the window still clips at most CLIPPED at each end, only less tightly.
MAX_PASSES = 10

__all__ = ["BINS", "CLIPPED", "REACH", "clipped_range", "percentiles"]


def clipped_range(strips: Callable[[], Iterable[np.ndarray]], lo: float,
                  hi: float) -> tuple[float, float]:
    """The display range of a float image from its finite samples' ``lo`` (min) and ``hi``
    (max): the minimum and maximum, at most :data:`REACH` of the percentiles' span beyond
    them (see the module docstring).

    Args:
        strips: Called once per pass; yields the image's samples in pieces of any shape
            (float32 or float64; NaN and +-inf are left out), together every sample once.
        lo: The minimum of the finite samples.
        hi: The maximum of the finite samples (``hi <= lo``: returned as they are).

    Returns:
        ``(lo, hi)`` in sample units, ``min <= lo <= hi <= max``.
    """
    p_lo, p_hi = percentiles(strips, lo, hi)
    reach = REACH * (p_hi - p_lo)
    return max(lo, p_lo - reach), min(hi, p_hi + reach)


def percentiles(strips: Callable[[], Iterable[np.ndarray]], lo: float,
                hi: float) -> tuple[float, float]:
    """The window that holds all but :data:`CLIPPED` of the finite samples at each end: the
    0.01st and 99.99th percentiles, each within 1 / :data:`RESOLUTION` of their span.

    Args:
        strips, lo, hi: As :func:`clipped_range`.

    Returns:
        ``(p_lo, p_hi)``, ``min <= p_lo <= p_hi <= max``; ``(lo, hi)`` as given where ``hi <=
        lo`` or the image has fewer than ``1 / CLIPPED`` finite samples.
    """
    if not hi > lo:
        return lo, hi
    low, high = lo, hi
    for _ in range(MAX_PASSES):
        counts = _histogram(strips, low, high)
        total = int(counts.sum())
        clipped = int(total * CLIPPED)
        if clipped == 0:
            return lo, hi
        cumulative = np.cumsum(counts)
        first = int(np.searchsorted(cumulative, clipped, side="right"))  # holds sample k+1
        last = int(np.searchsorted(cumulative, total - clipped, side="left"))  # sample n-k
        width = (high - low) / BINS
        # the end bins keep their exact outer edges (low + BINS * width may round past high)
        low, high = (low if first == 0 else low + first * width,
                     high if last == BINS - 1 else low + (last + 1) * width)
        if last - first + 1 >= RESOLUTION:
            break
    return max(low, lo), min(high, hi)


def _histogram(strips: Callable[[], Iterable[np.ndarray]], low: float, high: float) -> np.ndarray:
    """(BINS,) int64 counts of the finite samples over ``[low, high]``, those outside in the
    end bins."""
    scale = BINS / (high - low)
    counts = np.zeros(BINS, np.int64)
    for strip in strips():
        finite = strip[np.isfinite(strip)].astype(np.float64)
        index = np.clip(np.floor((finite - low) * scale), 0, BINS - 1).astype(np.int64)
        counts += np.bincount(index, minlength=BINS)
    return counts
