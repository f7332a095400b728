"""``benchmarks.edge_padding``: whole-image passes of packages padded each way, alone and as
the mean of their probabilities, on a tiny labelled dataset."""

from __future__ import annotations

import json

import numpy as np
import yaml
from click.testing import CliRunner
from PIL import Image

from benchmarks.edge_padding import main as edge_padding
from tests.conftest import CLASSES


def _dataset(root):
    rng = np.random.default_rng(0)
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for stem in ("x", "y"):
        mask = np.zeros((80, 100), np.uint8)
        mask[20:60, 10:50] = 1
        mask[65:, 70:] = 2
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    spec = {"name": "edges", "images": "images/*.png", "masks": "masks/{stem}.png",
            "classes": [{"name": c["name"], "value": c["label_value"]} for c in CLASSES],
            "splits": {"val": ["x", "y"]}}
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return root / "dataset.yaml"


def test_reports_each_package_and_their_mean_per_pad_and_mode(tiny_package, tmp_path):
    dataset = _dataset(tmp_path / "ds")
    res = CliRunner().invoke(edge_padding, [str(dataset), "--pad", "0", "--pad", "16",
                                            "--mode", "reflect", "--mode", "constant",
                                            "--threads", "1", str(tiny_package),
                                            str(tiny_package)])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert [(r["mode"], r["pad_px"]) for r in lines] == [
        ("reflect", 0), ("reflect", 16), ("constant", 0), ("constant", 16)]
    for r in lines:
        # the same package twice: the mean of its probabilities labels as it does
        assert r["1"] == r["mean"] and 0 <= r["mean"]["miou"] <= 1
        assert set(r["mean"]["iou"]) == {"background", "oxide", "crack"}
    assert lines[1]["mean"] != lines[3]["mean"]  # 16 px of reflection against black
