"""Calibration: expected calibration error on synthetic probabilities with known answers,
mIoU without the least-confident pixels on hand-made cubes, and evaluate's calibration
section through the production tiled path."""

from __future__ import annotations

import numpy as np
import pytest

from core.geometry import TileGeometry
from training.calibration import (
    calibration_report,
    confidence_cube,
    expected_calibration_error,
    miou_excluding_least_confident,
    reliability_bins,
)
from training.confusion import confusion_matrix, miou
from training.evaluation import evaluate_arrays, evaluate_package


def test_ece_of_hand_made_bins():
    # 10 pixels at p = 0.9 of which 8 right (gap 0.1), 10 at p = 0.6 of which 6 right (gap 0)
    conf = np.r_[np.full(10, 0.9), np.full(10, 0.6)]
    correct = np.r_[np.ones(8), np.zeros(2), np.ones(6), np.zeros(4)]
    assert expected_calibration_error(conf, correct) == pytest.approx(0.05)
    # always sure, right 70 % of the time: ECE = 0.3
    assert expected_calibration_error(np.ones(10), np.r_[np.ones(7), np.zeros(3)]) == (
        pytest.approx(0.3))
    # weights stand for pixels: the same as repeating entries
    assert expected_calibration_error([0.9, 0.6], [0.8, 0.6], weights=[10, 10]) == (
        pytest.approx(0.05))
    assert np.isnan(expected_calibration_error([], []))


def test_ece_bins_are_right_closed_and_fifteen_wide():
    bins = reliability_bins([1 / 15, 1 / 15 + 1e-9, 0.0, 1.0], [1, 1, 1, 1])
    assert len(bins) == 15 and bins[0]["lower"] == 0.0 and bins[-1]["upper"] == 1.0
    assert bins[0]["pixels"] == 2  # 0 and exactly 1/15 fall in (0, 1/15]
    assert bins[1]["pixels"] == 1 and bins[14]["pixels"] == 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_bins([1.5], [1])


def test_ece_of_calibrated_and_overconfident_samples():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 1.0, 200_000)
    calibrated = rng.uniform(size=p.size) < p  # right with probability p
    assert expected_calibration_error(p, calibrated) < 0.005
    # right with probability p**2: each bin's gap is E[p - p^2]; over U(0.2, 1) that is
    # (1/0.8) * integral_0.2^1 (p - p^2) dp = (1/6 - 0.01733) / 0.8 = 0.18667 (p - p^2 > 0
    # everywhere, so binning loses nothing of it)
    over = rng.uniform(size=p.size) < p**2
    assert expected_calibration_error(p, over) == pytest.approx(0.18667, abs=0.005)


def _cube_two_classes():
    """90 pixels right at confidence 250, 10 wrong (class 0 labelled, 1 predicted) at 50."""
    cube = np.zeros((256, 2, 2), np.int64)
    cube[250, 0, 0], cube[250, 1, 1] = 50, 40
    cube[50, 0, 1] = 10
    return cube


def test_excluding_the_least_confident_pixels():
    cube = _cube_two_classes()
    all_conf = cube.sum(0)
    assert miou(all_conf) == pytest.approx((50 / 60 + 40 / 50) / 2)
    ten = miou_excluding_least_confident(cube, 0.10)
    assert ten["miou"] == pytest.approx(1.0) and ten["pixel_accuracy"] == pytest.approx(1.0)
    assert ten["confidence_cut"] == pytest.approx(250 / 255, abs=1e-4)
    five = miou_excluding_least_confident(cube, 0.05)  # half of the 10 wrong pixels go
    assert five["miou"] == pytest.approx((50 / 55 + 40 / 45) / 2)
    assert five["confidence_cut"] == pytest.approx(50 / 255, abs=1e-4)
    twenty = miou_excluding_least_confident(cube, 0.20)  # then 10 of the 90 right ones
    assert twenty["miou"] == pytest.approx(1.0) and twenty["excluded_percent"] == 20.0
    assert miou_excluding_least_confident(cube, 0.0)["miou"] == pytest.approx(miou(all_conf))
    with pytest.raises(ValueError, match="share"):
        miou_excluding_least_confident(cube, 1.0)


def test_cube_and_report():
    pred = np.array([[0, 1], [1, 1]], np.uint8)
    mask = np.array([[0, 0], [1, 255]], np.uint8)
    conf = np.array([[255, 100], [200, 7]], np.uint8)
    cube = confidence_cube(pred, mask, conf, 2)
    assert cube.sum() == 3 and cube[100, 0, 1] == 1 and cube[7].sum() == 0  # ignored pixel
    np.testing.assert_array_equal(cube.sum(0), confusion_matrix(pred, mask, 2))
    with pytest.raises(ValueError, match="uint8"):
        confidence_cube(pred, mask, conf.astype(np.float32), 2)
    rep = calibration_report(cube, ["a", "b"])
    p = np.array([255, 100, 200]) / 255
    assert rep["ece"] == pytest.approx(
        expected_calibration_error(p, [1, 0, 1]), abs=1e-4)
    assert rep["n_bins"] == 15 and len(rep["reliability"]) == 15
    assert rep["mean_confidence"] == pytest.approx(p.mean(), abs=1e-4)
    assert rep["mean_confidence_per_class"]["b"] == pytest.approx((100 + 200) / 510, abs=1e-4)
    assert [e["excluded_percent"] for e in rep["excluding_least_confident"]] == [5, 10, 20]


def test_evaluate_reports_calibration_when_predict_gives_confidence():
    mask = np.array([[0, 0, 1, 1], [0, 1, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 1, 0, 0]], np.uint8)
    conf = np.array([[250, 60, 240, 230], [255, 220, 70, 9]], np.uint8)  # doubts the errors
    img = np.repeat(pred[..., None], 3, axis=2)
    m = evaluate_arrays(lambda im: (im[..., 0], conf), [(img, mask)], ["a", "b"], edge_limit=0)
    cal = m["calibration"]
    assert cal["miou_all"] == pytest.approx(m["miou"], abs=1e-4)
    gains = [e["miou"] for e in cal["excluding_least_confident"]]
    assert gains[-1] > cal["miou_all"]  # the doubted pixels were the wrong ones
    assert "calibration" not in evaluate_arrays(lambda im: im[..., 0], [(img, mask)],
                                                ["a", "b"], edge_limit=0)


def test_evaluate_package_calibration_uses_the_production_confidence(tiny_package):
    from worker.engine.segmenter import Segmenter

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (96, 160), dtype=np.uint8)
    m = evaluate_package(tiny_package, [(img, mask)], device="cpu", threads=1)
    labels, conf = Segmenter(tiny_package, device="cpu", threads=1).segment_array(
        img, TileGeometry(128, 16), with_confidence=True)
    expected = calibration_report(confidence_cube(labels, mask, conf, 3),
                                  ["background", "oxide", "crack"])
    assert m["calibration"] == expected
    assert 0 <= m["calibration"]["ece"] <= 1


def test_excluded_pixels_per_class():
    cube = _cube_two_classes()
    ten = miou_excluding_least_confident(cube, 0.10)
    assert ten["per_class_iou"] == [1.0, 1.0]
    assert ten["labelled_pixels_kept"] == pytest.approx([50 / 60, 1.0])
    rep = calibration_report(cube, ["a", "b"])
    assert rep["excluding_least_confident"][1]["labelled_pixels_kept"] == {"a": 0.8333, "b": 1.0}
