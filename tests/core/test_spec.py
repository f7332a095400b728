"""Job spec versions, the pixel size and the precision fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.spec import SPEC_VERSION, JobSpec, SpecError

BASE = {"source_url": "file:///x.tif", "model": "m", "tile_size": 512, "halo": 32}


def test_new_specs_are_version_3_and_carry_the_pixel_size_and_precision():
    spec = JobSpec(**BASE, pixel_size_um=0.42, precision="fp32")
    stored = spec.model_dump()
    assert stored["spec_version"] == SPEC_VERSION == 3
    assert JobSpec.from_stored(stored).pixel_size_um == 0.42
    assert JobSpec.from_stored(stored).precision == "fp32"
    assert JobSpec(**BASE).precision is None  # unless asked: each worker's setting


@pytest.mark.parametrize("version", [1, 2])
def test_older_specs_read_without_the_fields_they_lacked(version):
    spec = JobSpec.from_stored({**BASE, "spec_version": version})
    assert spec.precision is None
    if version == 1:
        assert spec.pixel_size_um is None


@pytest.mark.parametrize("bad", ["fp64", "float32", "", 32])
def test_precision_must_be_one_a_worker_knows(bad):
    with pytest.raises(ValidationError, match="precision"):
        JobSpec(**BASE, precision=bad)
    with pytest.raises(SpecError, match="precision"):
        JobSpec.from_stored({**BASE, "spec_version": 3, "precision": bad})


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_pixel_size_must_be_positive_and_finite(bad):
    with pytest.raises(ValidationError, match="pixel_size_um"):
        JobSpec(**BASE, pixel_size_um=bad)


def test_unknown_version_asks_to_upgrade_the_workers():
    with pytest.raises(SpecError, match="upgrade the workers"):
        JobSpec.from_stored({**BASE, "spec_version": 4})
