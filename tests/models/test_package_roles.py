"""Class roles (mount | pore | phase) in model packages and dataset.yaml, and the bundled zoo
model's roles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from models.package import MODEL_JSON, ClassInfo, ModelPackage

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"


def _cls(**kw) -> ClassInfo:
    return ClassInfo.model_validate({"index": 0, "name": "c", "rgb": (1, 2, 3),
                                     "label_value": 0, **kw})


@pytest.mark.parametrize(("given", "role", "pellet"), [
    ({}, "phase", True),
    ({"pellet": False}, "mount", False),  # packages written before roles existed
    ({"role": "mount"}, "mount", False),
    ({"role": "pore"}, "pore", True),
    ({"role": "phase", "pellet": True}, "phase", True),
])
def test_role_and_pellet_follow_each_other(given, role, pellet):
    c = _cls(**given)
    assert (c.role, c.pellet) == (role, pellet)


@pytest.mark.parametrize("given", [{"role": "mount", "pellet": True},
                                   {"role": "pore", "pellet": False},
                                   {"role": "epoxy"}])
def test_contradicting_or_unknown_role_is_rejected(given):
    with pytest.raises(ValidationError, match="role"):
        _cls(**given)


def test_zoo_models_declare_roles():
    for meta in ZOO.glob(f"*/*/{MODEL_JSON}"):
        raw = json.loads(meta.read_text())
        assert all("role" in c for c in raw["classes"]), meta
        pkg = ModelPackage.model_validate(raw)
        assert sum(c.role == "mount" for c in pkg.classes) >= 1, meta
    ebc = ModelPackage.model_validate_json((ZOO / "ebc-unet-mnv2/1" / MODEL_JSON).read_text())
    assert {c.name: c.role for c in ebc.classes} == {
        "background": "mount", "oxide": "phase", "crack": "pore"}
    assert [c.pellet for c in ebc.classes] == [False, True, True]


def test_dataset_yaml_roles_pass_into_the_package_the_trainer_writes(tmp_path):
    from core.geometry import TileGeometry
    from training.datasets import load_dataset_spec
    from training.trainer import _package_meta

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    spec = {"name": "tiny", "images": "images/*.png", "masks": "masks/{stem}.png",
            "classes": [{"name": "epoxy", "value": 0, "role": "mount"},
                        {"name": "pore", "value": 1, "role": "pore"},
                        {"name": "hematite", "value": 2}]}
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(spec))
    ds = load_dataset_spec(path)
    assert [c.role for c in ds.classes] == ["mount", "pore", "phase"]
    mask = np.array([[0, 1], [2, 2]], np.uint8)
    meta = _package_meta(ds, {"train": ["a"]}, [(np.zeros((2, 2, 3), np.uint8), mask)], name="t",
                         version="1", arch="Unet", encoder="resnet18", arch_params={},
                         mean=(0.5,) * 3, std=(0.25,) * 3, geometry=TileGeometry(256, 32))
    assert [(c["role"], c["pellet"]) for c in meta["classes"]] == [
        ("mount", False), ("pore", True), ("phase", True)]
    pkg = ModelPackage.model_validate({**meta, "weights_sha256": "0" * 64})
    assert [c.role for c in pkg.classes] == ["mount", "pore", "phase"]
