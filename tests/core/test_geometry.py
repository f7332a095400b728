"""One tile geometry rule, held by :class:`core.geometry.TileGeometry` and applied wherever a
geometry is given: job specs, model packages and the settings' override."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.geometry import DEFAULT_GEOMETRY, GeometryError, TileGeometry
from core.settings import Settings
from core.spec import JobSpec
from models.package import ModelPackage


@pytest.mark.parametrize("tile,halo,message", [
    (500, 16, "multiple of 32"), (0, 0, "multiple of 32"), (64, -1, "halo must be >= 0"),
    (64, 17, "tile_size - 2\\*halo must be >= 32"), (5.0, 1, "whole px"), (True, 1, "whole px"),
])
def test_one_geometry_rule(tile, halo, message):
    with pytest.raises(GeometryError, match=message):
        TileGeometry(tile, halo)
    assert TileGeometry(64, 16).stride == 32 and TileGeometry(1024, 128).overlap_cost == (4 / 3) ** 2


def test_job_specs_and_model_packages_apply_the_same_rule():
    with pytest.raises(ValidationError, match="multiple of 32"):
        JobSpec(source_url="s3://b/x.tif", model="m", tile_size=500, halo=16)
    spec = JobSpec(source_url="s3://b/x.tif", model="m", tile_size=512, halo=64)
    assert spec.geometry == TileGeometry(512, 64) and spec.stride == 384
    meta = dict(name="m", version="1", classes=[{"index": 0, "name": "a", "rgb": (0, 0, 0),
                                                 "label_value": 0}], weights_sha256="0" * 64)
    with pytest.raises(ValidationError, match=r"tile_size - 2\*halo"):
        ModelPackage(**meta, tile_size=64, halo=20)
    assert ModelPackage(**meta, **DEFAULT_GEOMETRY.as_dict()).geometry == DEFAULT_GEOMETRY
    # a package's edge_pad (mirrored px past the image's edge) is at most its halo
    assert ModelPackage(**meta, tile_size=64, halo=16, edge_pad=16).edge_pad == 16
    with pytest.raises(ValidationError, match="over the halo"):
        ModelPackage(**meta, tile_size=64, halo=16, edge_pad=17)


def test_settings_geometry_override_is_both_or_neither(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        Settings(home=tmp_path, tile_size=512)
    with pytest.raises(ValueError, match="multiple of 32"):
        Settings(home=tmp_path, tile_size=500, halo=10)
    assert Settings(home=tmp_path).geometry is None


def test_model_tile_size_is_the_tile_at_the_input_scale_and_keeps_the_rule():
    from core.geometry import model_size, model_tile_size

    assert model_tile_size(1024, 1) == 1024
    assert model_tile_size(2048, 0.25) == 512
    assert model_tile_size(192, 0.5) == 96
    assert model_size(3, 0.25) == 1  # never 0 px
    assert model_size(1030, 0.25) == 258  # round, not floor
    with pytest.raises(GeometryError, match=r"a 96 px tile at input scale 0\.5 is 48 model px, "
                                            r"not a multiple of 32"):
        model_tile_size(96, 0.5)
    with pytest.raises(GeometryError, match="not a multiple of 32"):
        model_tile_size(1024, 0.3)  # 307 model px
