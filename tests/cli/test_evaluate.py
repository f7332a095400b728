"""``pelletseg evaluate``: a package folder or a registered NAME[:VERSION], metrics.json and the
PNG/HTML report, and clear errors for bad arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from cli.main import main
from core.settings import Settings
from worker.engine.network import write_package

CLASSES = [{"index": 0, "name": "background", "rgb": (40, 40, 40), "label_value": 0,
            "pellet": False},
           {"index": 1, "name": "oxide", "rgb": (255, 170, 0), "label_value": 1},
           {"index": 2, "name": "crack", "rgb": (0, 85, 255), "label_value": 2}]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A random-init UNet (ResNet-18, depth 3) package with tile 64, halo 16."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    params = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
    model = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None,
                             in_channels=3, classes=3, **params)
    folder = tmp_path_factory.mktemp("pkg") / "evaltiny"
    write_package(folder, model, {"name": "evaltiny", "version": "3", "architecture": "Unet",
                                  "encoder": "resnet18", "arch_params": params,
                                  "classes": CLASSES, "tile_size": 64, "halo": 16})
    return folder


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    for d in ("images", "masks"):
        (tmp_path / "ds" / d).mkdir(parents=True)
    for stem in ("x", "y"):
        mask = np.zeros((80, 100), np.uint8)
        mask[20:60, 10:50] = 1
        mask[65:, 70:] = 2
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(
            tmp_path / "ds" / "images" / f"{stem}.png")
        Image.fromarray(mask).save(tmp_path / "ds" / "masks" / f"{stem}.png")
    spec = {"name": "evalset", "images": "images/*.png", "masks": "masks/{stem}.png",
            "classes": [{"name": c["name"], "value": c["label_value"]} for c in CLASSES],
            "splits": {"val": ["x"], "test": ["x", "y"]}}
    path = tmp_path / "ds" / "dataset.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_evaluate_a_package_folder(package, dataset, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["evaluate", str(package), str(dataset), "--out", str(out),
                                    "--edge-limit", "2", "--threads", "1"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"]["split"] == "test" and m["images"] == 2
    assert m["model"]["name"] == "evaltiny" and m["model"]["version"] == "3"
    assert (m["inference"]["tile_size"], m["inference"]["halo"]) == (64, 16)
    assert sum(map(sum, m["confusion_matrix"])) == 2 * 80 * 100
    assert m["edge_weighted"]["edge_limit_px"] == 2
    assert {"miou", "pixel_accuracy", "mean_class_accuracy", "per_class", "phase_fractions"} <= set(m)
    assert (out / "report.png").stat().st_size > 1000
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert "background" in res.output and f"mIoU {m['miou']}" in res.output
    cal = m["calibration"]
    assert f"ECE {cal['ece']} (15 bins)" in res.output and 0 <= cal["ece"] <= 1
    assert [e["excluded_percent"] for e in cal["excluding_least_confident"]] == [5, 10, 20]
    assert "Calibration of the confidence" in (out / "report.html").read_text()
    # no edge padding in the package: the halo
    assert m["inference"]["edge_pad"] == 16 and "edge padding 16" in res.output
    val = CliRunner().invoke(main, ["evaluate", str(package), str(dataset), "--out",
                                    str(tmp_path / "v"), "--split", "val", "--edge-pad", "4"])
    assert val.exit_code == 0, val.output
    mv = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert mv["images"] == 1 and mv["inference"]["edge_pad"] == 4


def test_evaluate_a_registered_model_by_name(package, dataset, tmp_path):
    from models import ModelRegistry
    from storage.jobtable.engine import upgrade

    home = tmp_path / "home"
    settings = Settings(home=home)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    ModelRegistry.from_settings(settings).publish(package)
    for ref in ("evaltiny", "evaltiny:3"):
        out = tmp_path / ref.replace(":", "_")
        res = CliRunner().invoke(main, ["evaluate", ref, str(dataset), "--out", str(out),
                                        "--home", str(home)])
        assert res.exit_code == 0, res.output
        m = json.loads((out / "metrics.json").read_text())
        assert m["model"]["version"] == "3" and len(m["model"]["sha256"]) == 64
    res = CliRunner().invoke(main, ["evaluate", "evaltiny:9", str(dataset), "--out",
                                    str(tmp_path / "z"), "--home", str(home)])
    assert res.exit_code != 0 and "'evaltiny 9' is not registered" in res.output


@pytest.mark.parametrize("args, message", [
    (["--split", "train"], "split 'train' is missing or empty; splits: ['test', 'val']"),
    (["--edge-limit", "-1"], "Invalid value for '--edge-limit'"),
])
def test_evaluate_errors_are_clear(package, dataset, tmp_path, args, message):
    res = CliRunner().invoke(main, ["evaluate", str(package), str(dataset), "--out",
                                    str(tmp_path / "o"), *args])
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_evaluate_rejects_a_folder_that_is_not_a_package(dataset, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path), str(dataset), "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code != 0 and "not a model package folder" in res.output


def test_evaluate_refuses_a_version_without_a_model_name(dataset, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", ":3", str(dataset), "--out",
                                    str(tmp_path / "o"), "--home", str(tmp_path / "h")])
    assert res.exit_code == 1 and "':3': give a model package folder or a registered " \
        "NAME[:VERSION]" in res.output
    assert not (tmp_path / "h").exists()  # refused before any stack is prepared


def test_evaluate_a_dataset_without_splits_uses_every_image_and_says_so(package, dataset,
                                                                       tmp_path):
    spec = yaml.safe_load(dataset.read_text())
    del spec["splits"]
    whole = dataset.with_name("whole.yaml")
    whole.write_text(yaml.safe_dump(spec))
    res = CliRunner().invoke(main, ["evaluate", str(package), str(whole), "--out",
                                    str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    assert "declares no splits: evaluating all 2 images" in res.output
    m = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert m["images"] == 2 and m["dataset"]["split"] == "all"
    assert sorted(m["dataset"]["images"]) == ["x", "y"]
    res = CliRunner().invoke(main, ["evaluate", str(package), str(whole), "--out",
                                    str(tmp_path / "t"), "--split", "test"])
    assert res.exit_code != 0 and "leave out --split to evaluate every image" in res.output
