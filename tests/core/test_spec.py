"""Job spec versions, the pixel size, precision, edge tiles and significant bits fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.spec import SPEC_VERSION, JobSpec, SpecError

BASE = {"source_url": "file:///x.tif", "model": "m", "tile_size": 512, "halo": 32}
#: The fields of a stored version-2 spec (what workers from before version 3 accept).
V2_FIELDS = {"spec_version", "source_url", "model", "model_version", "tile_size", "halo",
             "rows_per_task", "labels", "webhook_url", "pixel_size_um"}


def test_a_new_spec_has_the_oldest_version_that_holds_its_fields():
    spec = JobSpec(**BASE, pixel_size_um=0.42, precision="fp32")
    stored = spec.model_dump()
    assert stored["spec_version"] == 3
    assert JobSpec.from_stored(stored).pixel_size_um == 0.42
    assert JobSpec.from_stored(stored).precision == "fp32"
    # without a precision it stays version 2: workers from before version 3 run it
    plain = JobSpec(**BASE, pixel_size_um=0.42)
    assert plain.precision is None and plain.spec_version == 2
    assert JobSpec.from_stored(plain.model_dump()) == plain
    # ... and its stored form holds only version-2 fields (workers forbid unknown ones)
    assert set(plain.model_dump(mode="json")) == V2_FIELDS
    assert set(spec.model_dump(mode="json")) == V2_FIELDS | {"precision"}
    with pytest.raises(ValidationError, match="precision needs spec version 3"):
        JobSpec(**BASE, spec_version=2, precision="fp32")
    with pytest.raises(SpecError, match="precision needs spec version 3"):
        JobSpec.from_stored({**BASE, "spec_version": 2, "precision": "bf16"})


def test_edge_tiles_make_a_version_4_spec_and_older_specs_read_as_whole_tiles():
    """A spec that names its edge tiles is version 4 (workers from before refuse it instead
    of laying out another grid than its rows were planned with); one that does not reads as
    whole edge tiles, the layout of every job planned before version 4."""
    spec = JobSpec(**BASE, edge_tiles="fitted")
    stored = spec.model_dump(mode="json")
    assert stored["spec_version"] == 4 and stored["edge_tiles"] == "fitted"
    assert JobSpec.from_stored(stored).fit_edges
    assert not JobSpec(**BASE, edge_tiles="whole").fit_edges
    for version in (1, 2, 3):
        old = JobSpec.from_stored({**BASE, "spec_version": version})
        assert old.edge_tiles is None and not old.fit_edges
    assert "edge_tiles" not in JobSpec(**BASE, precision="fp32").model_dump(mode="json")
    with pytest.raises(SpecError, match="edge_tiles needs spec version 4"):
        JobSpec.from_stored({**BASE, "spec_version": 3, "edge_tiles": "fitted"})
    with pytest.raises(ValidationError, match="edge_tiles"):
        JobSpec(**BASE, edge_tiles="shrunk")


def test_significant_bits_make_a_version_5_spec_and_older_specs_read_without():
    """A job that gives its source's significant bits is version 5 (workers from before refuse
    it instead of converting its 16-bit source by the high byte); one that does not stays
    version 4 (the submission service's fitted edge tiles), which those workers still run."""
    spec = JobSpec(**BASE, edge_tiles="fitted", significant_bits=12)
    stored = spec.model_dump(mode="json")
    assert stored["spec_version"] == 5 and stored["significant_bits"] == 12
    assert JobSpec.from_stored(stored).significant_bits == 12
    plain = JobSpec(**BASE, edge_tiles="fitted")
    assert plain.spec_version == 4 and "significant_bits" not in plain.model_dump(mode="json")
    for version in (1, 2, 3, 4):
        assert JobSpec.from_stored({**BASE, "spec_version": version}).significant_bits is None
    with pytest.raises(SpecError, match="significant_bits needs spec version 5"):
        JobSpec.from_stored({**BASE, "spec_version": 4, "significant_bits": 12})
    for bad in (7, 17, 0):
        with pytest.raises(ValidationError, match="significant_bits"):
            JobSpec(**BASE, significant_bits=bad)


def test_a_scene_makes_a_version_6_spec_and_older_specs_read_without():
    """A job that names the scene of a multi-image OME-TIFF is version 6 (workers from before
    refuse it instead of refusing the file or reading another image); one that does not keeps
    the version its other fields need."""
    spec = JobSpec(**BASE, edge_tiles="fitted", scene=2)
    stored = spec.model_dump(mode="json")
    assert stored["spec_version"] == SPEC_VERSION == 6 and stored["scene"] == 2
    assert JobSpec.from_stored(stored).scene == 2
    plain = JobSpec(**BASE, edge_tiles="fitted", significant_bits=12)
    assert plain.spec_version == 5 and "scene" not in plain.model_dump(mode="json")
    for version in (1, 2, 3, 4, 5):
        assert JobSpec.from_stored({**BASE, "spec_version": version}).scene is None
    with pytest.raises(SpecError, match="scene needs spec version 6"):
        JobSpec.from_stored({**BASE, "spec_version": 5, "scene": 0})
    for bad in (-1, 1.5, "all"):
        with pytest.raises(ValidationError, match="scene"):
            JobSpec(**BASE, scene=bad)


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
        JobSpec.from_stored({**BASE, "spec_version": 7})
