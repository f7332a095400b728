"""``benchmarks.depth_recall``: recall by depth inside the labelled regions, through the served
path, beside the training split's depths, on a tiny labelled dataset."""

from __future__ import annotations

import json

import numpy as np
import yaml
from click.testing import CliRunner
from PIL import Image

from benchmarks.depth_recall import main as depth_recall
from tests.conftest import CLASSES


def _dataset(root):
    rng = np.random.default_rng(0)
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for stem, side in (("grains", 6), ("mass", 40)):
        mask = np.zeros((80, 100), np.uint8)
        mask[20:20 + side, 10:10 + side] = 1  # a small grain (train) or a large region (val)
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    spec = {"name": "depths", "images": "images/*.png", "masks": "masks/{stem}.png",
            "classes": [{"name": c["name"], "value": c["label_value"]} for c in CLASSES],
            "splits": {"train": ["grains"], "val": ["mass"]}}
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return root / "dataset.yaml"


def test_reports_training_depths_and_each_package_s_recall_by_depth(tiny_package, tmp_path):
    dataset = _dataset(tmp_path / "ds")
    res = CliRunner().invoke(depth_recall, [str(dataset), "--depth", "4", "--depth", "12",
                                            "--threads", "1", str(tiny_package)])
    assert res.exit_code == 0, res.output
    train, pkg = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    # the train grain is 6 px wide: 3 px deep at most, all of it in the first bin
    assert train["split"] == "train"
    assert train["labelled_px_share_by_depth"]["oxide"] == {"(0, 4]": 1.0, "(4, 12]": 0.0,
                                                            "> 12": 0.0}
    # the val region is 40 px wide: px in every bin, counted once each
    oxide = pkg["recall_by_depth"]["oxide"]
    assert list(oxide) == ["(0, 4]", "(4, 12]", "> 12"]
    assert sum(b["px"] for b in oxide.values()) == 40 * 40
    assert oxide["> 12"]["px"] == (40 - 24) ** 2
    assert all(0 <= b["recall"] <= 1 for b in oxide.values())
    assert pkg["package"] == tiny_package.name and pkg["split"] == "val"


def test_a_missing_split_is_named(tiny_package, tmp_path):
    dataset = _dataset(tmp_path / "ds")
    res = CliRunner().invoke(depth_recall, [str(dataset), "--split", "test", str(tiny_package)])
    assert res.exit_code != 0 and "split 'test' is missing" in res.output
