"""Job spec versions and the pixel size field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.spec import SPEC_VERSION, JobSpec, SpecError

BASE = {"source_url": "file:///x.tif", "model": "m", "tile_size": 512, "halo": 32}


def test_new_specs_are_version_2_and_carry_the_pixel_size():
    spec = JobSpec(**BASE, pixel_size_um=0.42)
    stored = spec.model_dump()
    assert stored["spec_version"] == SPEC_VERSION == 2
    assert JobSpec.from_stored(stored).pixel_size_um == 0.42


def test_version_1_spec_reads_without_a_pixel_size():
    spec = JobSpec.from_stored({**BASE, "spec_version": 1})
    assert spec.pixel_size_um is None


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_pixel_size_must_be_positive_and_finite(bad):
    with pytest.raises(ValidationError, match="pixel_size_um"):
        JobSpec(**BASE, pixel_size_um=bad)


def test_unknown_version_asks_to_upgrade_the_workers():
    with pytest.raises(SpecError, match="upgrade the workers"):
        JobSpec.from_stored({**BASE, "spec_version": 3})
