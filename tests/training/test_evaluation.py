"""Evaluation: metrics against hand-computed confusion matrices, the edge-weighted matrix
against hand-made borders, the production tiled path, class matching, and the reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from core.geometry import TileGeometry
from models.package import ModelPackageError
from training.confusion import (
    class_accuracy,
    confusion_matrix,
    depth_confusion,
    edge_weights,
    label_depth,
    mean_class_accuracy,
    pixel_accuracy,
    weighted_confusion_matrix,
)
from training.datasets import DatasetError
from training.evaluation import evaluate_arrays, evaluate_dataset, evaluate_package
from training.reports import write_report

NAMES, PELLET = ["bg", "a", "b"], [False, True, True]
MASK = np.array([[0, 0, 1, 1], [0, 2, 2, 255]], np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 2, 1, 0]], np.uint8)


def _pair(mask=MASK, pred=PRED):
    """An 'image' whose red channel is the prediction, read back by :func:`_predict`."""
    return np.repeat(pred[..., None], 3, axis=2), mask


def _predict(img):
    return img[..., 0]


def test_metrics_of_a_hand_computed_confusion_matrix():
    m = evaluate_arrays(_predict, [_pair(), _pair()], NAMES, PELLET, edge_limit=0,
                        image_names=["one", "two"])
    # (labelled, predicted) pairs of one image: (0,0) x2, (0,1), (1,1) x2, (2,2), (2,1); 1 ignored
    assert m["confusion_matrix"] == [[4, 2, 0], [0, 4, 0], [0, 2, 2]]
    assert m["ignored_pixels"] == 2 and m["labelled_pixels"] == 14 and m["images"] == 2
    assert m["miou"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3, abs=1e-4)
    assert m["pixel_accuracy"] == pytest.approx(5 / 7, abs=1e-4)
    assert m["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3, abs=1e-4)
    a = m["per_class"][1]
    assert (a["name"], a["iou"], a["accuracy"], a["precision"]) == ("a", 0.5, 1.0, 0.5)
    assert (a["labelled_pixels"], a["predicted_pixels"]) == (4, 8)
    fr = {f["name"]: f for f in m["phase_fractions"]}
    assert fr["bg"]["labelled_percent"] == pytest.approx(300 / 7, abs=1e-3)
    assert fr["bg"]["predicted_percent"] == pytest.approx(200 / 7, abs=1e-3)
    assert fr["a"]["abs_error_pp"] == pytest.approx(200 / 7, abs=1e-3)
    assert "labelled_percent_of_pellet" not in fr["bg"]  # not a pellet class
    assert (fr["a"]["labelled_percent_of_pellet"], fr["a"]["predicted_percent_of_pellet"]) == (
        50.0, 80.0)
    assert fr["b"]["abs_error_of_pellet_pp"] == 30.0
    assert m["phase_fraction_mae_pp"] == pytest.approx((100 / 7 + 200 / 7 + 100 / 7) / 3, abs=1e-3)
    assert [im["image"] for im in m["per_image"]] == ["one", "two"]
    assert m["per_image"][0]["miou"] == m["miou"]
    # N = 0: the weighted matrix is the plain one.
    assert m["edge_weighted"]["confusion_matrix"] == [[4, 2, 0], [0, 4, 0], [0, 2, 2]]


def test_metric_functions_direct():
    conf = np.array([[3, 1], [0, 0]])
    assert pixel_accuracy(conf) == 0.75
    acc = class_accuracy(conf)
    assert acc[0] == 0.75 and math.isnan(acc[1])  # class 1 never labelled
    assert mean_class_accuracy(conf) == 0.75
    assert math.isnan(pixel_accuracy(np.zeros((2, 2))))


def test_edge_weights_of_a_straight_border():
    target = np.zeros((8, 8), np.uint8)
    target[:, 4:] = 1  # border between columns 3 and 4
    w = edge_weights(target, 3)
    # distance to the other label: columns 0..7 -> 4, 3, 2, 1 | 1, 2, 3, 4 -> min(d, 3) / 3
    np.testing.assert_allclose(w[0], [1, 1, 2 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert (w == w[0]).all()  # the image edge is not a border
    wc = weighted_confusion_matrix(np.zeros_like(target), target, 2, w)
    np.testing.assert_allclose(wc, [[24, 0], [24, 0]])  # 8 rows x (1 + 1 + 2/3 + 1/3)
    assert (edge_weights(target, 0) == 1).all()
    assert (edge_weights(np.zeros((4, 4), np.uint8), 3) == 1).all()  # no border at all


def test_edge_weights_are_euclidean_around_an_island():
    target = np.zeros((7, 7), np.uint8)
    target[3, 3] = 1  # one pixel of class 1
    w = edge_weights(target, 3)
    assert w[3, 3] == pytest.approx(1 / 3)                  # touches class 0
    assert w[2, 3] == pytest.approx(1 / 3)                  # 4-neighbour: d = 1
    assert w[2, 2] == pytest.approx(math.sqrt(2) / 3)       # diagonal: d = sqrt 2
    assert w[1, 3] == pytest.approx(2 / 3)                  # d = 2
    assert w[1, 1] == pytest.approx(math.sqrt(8) / 3)       # d = 2.83
    assert w[0, 0] == 1 and w[0, 3] == 1                    # d >= 3
    target[0, 6] = 255  # an ignored pixel is a border for its neighbours
    assert edge_weights(target, 3)[0, 5] == pytest.approx(1 / 3)


def test_label_depth_is_the_distance_to_another_label_exact_up_to_its_limit():
    target = np.zeros((40, 40), np.uint8)
    target[5:35, 5:35] = 1  # a 30 px square: its centre lies 15 px inside
    depth = label_depth(target)
    assert depth[5, 20] == 1 and depth[19, 19] == 15 and depth[20, 20] == 15
    assert depth[0, 0] == pytest.approx(math.sqrt(50))  # to the square's corner (5, 5)
    limited = label_depth(target, 3)
    near = depth <= 3
    np.testing.assert_array_equal(limited[near], depth[near])  # exact up to the limit
    assert (limited[~near] > 3).all()  # deeper: only known to be deeper
    assert np.isinf(label_depth(np.ones((4, 4), np.uint8))).all()  # one label: no border
    with pytest.raises(ValueError, match="2-D"):
        label_depth(np.zeros(4))


def test_depth_confusion_bins_each_region_s_px_by_depth():
    target = np.zeros((40, 40), np.uint8)
    target[5:35, 5:35] = 1
    pred = target.copy()
    pred[12:28, 12:28] = 0  # the inside of the square (depth > 7) called class 0
    conf = depth_confusion(pred, target, 2, (2, 7))
    assert conf.shape == (3, 2, 2) and conf.sum() == target.size
    np.testing.assert_array_equal(conf.sum(0), confusion_matrix(pred, target, 2))
    # the square's first 2 px rings and the next 5 are right, the 16 x 16 inside is not
    assert conf[0, 1, 1] == 30 * 30 - 26 * 26 and conf[1, 1, 1] == 26 * 26 - 16 * 16
    assert conf[2, 1, 0] == 16 * 16 and conf[2, 1, 1] == 0
    ignored = target.copy()
    ignored[0, 0] = 255  # ignored px: no row, and a border for their neighbours
    assert depth_confusion(pred, ignored, 2, (2, 7)).sum() == target.size - 1
    for bad in ((), (7, 2), (0, 4)):
        with pytest.raises(ValueError, match="increasing"):
            depth_confusion(pred, target, 2, bad)


def test_weighted_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in size"):
        weighted_confusion_matrix(np.zeros(3), np.zeros(3), 2, np.ones(2))
    with pytest.raises(ValueError, match="outside"):
        weighted_confusion_matrix(np.array([5]), np.array([0]), 2, np.ones(1))


def test_edge_weighted_matrix_in_evaluation():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 1
    m = evaluate_arrays(_predict, [_pair(mask, np.zeros_like(mask))], ["x", "y"], edge_limit=3)
    assert m["confusion_matrix"] == [[32, 0], [32, 0]]
    assert m["edge_weighted"]["confusion_matrix"] == [[24.0, 0.0], [24.0, 0.0]]
    assert m["edge_weighted"]["miou"] == 0.25 and m["edge_weighted"]["edge_limit_px"] == 3


def _textured(seed=0, shape=(150, 200)):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[40:100, 30:120] = 1
    mask[110:, 150:] = 2
    return img, mask


def test_evaluate_package_uses_the_production_tiled_path(tiny_package):
    from worker.engine.segmenter import Segmenter

    data = [_textured(0), _textured(1)]
    m = evaluate_package(tiny_package, data, device="cpu", image_names=["p", "q"])
    seg = Segmenter(tiny_package, device="cpu")
    expected = sum(confusion_matrix(seg.segment_array(img, TileGeometry(128, 16)), mask, 3)
                   for img, mask in data)
    assert m["confusion_matrix"] == expected.tolist()
    assert m["inference"]["path"] == "worker.engine.segmenter.Segmenter.segment_array"
    assert (m["inference"]["tile_size"], m["inference"]["halo"]) == (128, 16)  # the package's
    assert m["inference"]["input_scale"] == 1.0  # the package's (tiny_package: full resolution)
    m2 = evaluate_package(tiny_package, data[:1], geometry=TileGeometry(64, 8))
    assert (m2["inference"]["tile_size"], m2["inference"]["halo"]) == (64, 8)


def _dataset(root, classes, splits=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i, stem in enumerate(("s1", "s2")):
        img, mask = _textured(i, (96, 128))
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    spec = {"name": "synthetic", "images": "images/*.png", "masks": "masks/{stem}.png",
            "classes": classes, "splits": splits or {"test": ["s1", "s2"]}}
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return root / "dataset.yaml"


def test_evaluate_dataset_matches_classes_by_name(tiny_package, tmp_path):
    # Dataset classes listed in another order than the model's background/oxide/crack.
    path = _dataset(tmp_path, [{"name": "crack", "value": 2}, {"name": "background", "value": 0},
                               {"name": "oxide", "value": 1}])
    m = evaluate_dataset(tiny_package, path, split="test")
    direct = evaluate_package(tiny_package, [_textured(0, (96, 128)), _textured(1, (96, 128))])
    assert m["confusion_matrix"] == direct["confusion_matrix"]
    assert m["classes"] == ["background", "oxide", "crack"]  # the model's order
    assert m["model"]["name"] == "tiny" and len(m["model"]["sha256"]) == 64
    assert m["dataset"] == {"name": "synthetic", "yaml": str(path.resolve()), "split": "test",
                            "images": ["s1", "s2"]}


@pytest.mark.parametrize("classes, message", [
    ([{"name": "background", "value": 0}, {"name": "pore", "value": 1},
      {"name": "crack", "value": 2}], "dataset class 'pore' is not a class of the model"),
    ([{"name": "background", "value": 0}, {"name": "oxide", "value": 1},
      {"name": "crack", "value": 7}], "class 'crack': dataset value 7, model label_value 2"),
])
def test_evaluate_dataset_refuses_classes_that_do_not_fit(tiny_package, tmp_path, classes, message):
    path = _dataset(tmp_path, classes)
    with pytest.raises(ModelPackageError, match=message):
        evaluate_dataset(tiny_package, path)


def test_evaluate_dataset_names_the_available_splits(tiny_package, tmp_path):
    path = _dataset(tmp_path, [{"name": "background", "value": 0}, {"name": "oxide", "value": 1},
                               {"name": "crack", "value": 2}], splits={"val": ["s1"]})
    with pytest.raises(DatasetError, match=r"split 'test' is missing or empty; splits: \['val'\]"):
        evaluate_dataset(tiny_package, path)


def test_reports(tmp_path):
    m = evaluate_arrays(_predict, [_pair()], ["bg", "a<b", "c"], PELLET, edge_limit=1)
    m["model"] = {"name": "m", "version": "1", "sha256": "f" * 64}
    paths = write_report(m, tmp_path / "out", colours=[(0, 0, 0), (255, 0, 0), (0, 0, 255)])
    assert json.loads(paths["metrics"].read_text())["confusion_matrix"] == m["confusion_matrix"]
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG" and im.size == (1600, 520)
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something was drawn
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "a&lt;b" in page and "a<b" not in page
    assert "sha256 ffffffffffff" in page and "Phase fractions of the pellet" in page
