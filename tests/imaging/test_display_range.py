"""The display range of float images: minimum and maximum bounded by the percentiles of the
finite samples, exact across strips."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.display_range import CLIPPED, REACH, RESOLUTION, clipped_range, percentiles


def _strips(values: np.ndarray, rows: int):
    return lambda: (values[y:y + rows] for y in range(0, values.shape[0], rows))


def _check(values: np.ndarray, got: tuple[float, float]) -> None:
    """At most CLIPPED of the finite samples below lo and above hi, and each end within
    1/RESOLUTION of the percentiles' span of the true percentile."""
    finite = np.sort(values[np.isfinite(values)].astype(np.float64))
    n = finite.size
    k = int(n * CLIPPED)
    lo, hi = got
    assert (finite < lo).sum() <= k and (finite > hi).sum() <= k
    span = finite[n - k - 1] - finite[k]
    assert finite[k] - span / RESOLUTION <= lo <= finite[k]
    assert finite[n - k - 1] <= hi <= finite[n - k - 1] + span / RESOLUTION


def test_a_few_hot_pixels_do_not_set_the_range():
    """A flat-field-corrected field (around 1.0) with 5 hot pixels at 40: the range is the
    field's percentiles and a quarter of their span beyond, not 0..40 (which mapped the field
    to at most 7 of 255)."""
    values = np.random.default_rng(0).normal(1.0, 0.1, (1000, 1200)).astype(np.float32)
    values[[3, 400, 700, 900, 999], [5, 6, 7, 8, 9]] = 40.0
    lo, hi = float(values.min()), float(values.max())
    p_lo, p_hi = percentiles(_strips(values, 256), lo, hi)
    _check(values, (p_lo, p_hi))
    assert 1.3 < p_hi < 1.6 and 0.4 < p_lo < 0.7
    got = clipped_range(_strips(values, 256), lo, hi)
    reach = REACH * (p_hi - p_lo)
    assert got == (lo, p_hi + reach)  # the field's darkest pixel is within reach
    assert got[1] < 2.0


def test_an_image_whose_extremes_lie_near_its_bulk_keeps_its_minimum_and_maximum():
    """A well-exposed field (its darkest and brightest pixels within a quarter of the central
    range of the percentiles): the map of before, min..max."""
    values = np.random.default_rng(4).uniform(0.1, 1.1, (400, 500))
    values[0, 0], values[0, 1] = 0.0, 1.3  # rare, but near: 0.2 beyond a span of ~1.0
    assert clipped_range(_strips(values, 64), 0.0, 1.3) == (0.0, 1.3)


@pytest.mark.parametrize("outlier", [1e6, 1e30, -1e30])
def test_extreme_outliers_narrow_the_window_in_a_few_passes(outlier):
    values = np.random.default_rng(1).uniform(0.2, 0.9, (300, 400))
    values[0, :3] = outlier
    passes = []

    def strips():
        passes.append(1)
        return iter([values])

    got = percentiles(strips, float(values.min()), float(values.max()))
    _check(values, got)
    assert 0.2 <= got[0] < 0.2005 and 0.8995 < got[1] <= 0.9
    assert len(passes) <= 10


def test_the_range_does_not_depend_on_how_the_image_is_cut():
    """The libvips path reads strips of rows by samples per strip, the CZI path bands of 256
    rows: the counts are exact, so every cut gives the same range."""
    values = np.random.default_rng(2).gamma(2.0, 0.3, (500, 300, 3)).astype(np.float32)
    values[10, 10] = np.nan
    values[20, 20] = np.inf
    finite = values[np.isfinite(values)]
    lo, hi = float(finite.min()), float(finite.max())
    got = {percentiles(_strips(values, rows), lo, hi) for rows in (1, 7, 256, 500)}
    assert len(got) == 1
    _check(values, got.pop())
    assert len({clipped_range(_strips(values, rows), lo, hi) for rows in (1, 7, 256)}) == 1


def test_an_image_of_fewer_than_ten_thousand_samples_keeps_its_minimum_and_maximum():
    values = np.linspace(0.0, 1.0, 9999).reshape(99, 101)
    values[0, 0] = 50.0
    assert percentiles(_strips(values, 10), 0.0, 50.0) == (0.0, 50.0)
    assert clipped_range(_strips(values, 10), 0.0, 50.0) == (0.0, 50.0)
    assert clipped_range(_strips(values, 10), 3.0, 3.0) == (3.0, 3.0)  # one value: as given
