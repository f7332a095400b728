"""Calibration of the per-pixel confidence: expected calibration error and mIoU when the
least-confident pixels are left out.

The confidence is the one production jobs write (:meth:`worker.engine.segmenter.Segmenter.decide`:
``round(255 * p)``, p the maximum softmax probability). Evaluation accumulates, over the
labelled pixels, a (256, C, C) *confidence cube*: pixel counts by (confidence value, labelled
class, predicted class) (:func:`confidence_cube`); every figure here is computed from it
exactly, whatever the number of images.

- **Expected calibration error** (Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern
  Neural Networks", ICML 2017, eq. 3): pixels are put in M = 15 equal-width bins
  ``B_m = ((m - 1) / M, m / M]`` of confidence, and ``ECE = sum_m |B_m| / n * |acc(B_m) -
  conf(B_m)|`` (acc: share predicted correctly, conf: mean confidence of the bin). 0 is
  perfectly calibrated. Confidence is taken as stored (multiples of 1/255), so the figure
  can differ from one on float probabilities by at most 1/510.
- **mIoU excluding the least-confident pixels**: the labelled pixels are ordered by
  confidence, and the lowest ``f`` share of them (f = 5, 10, 20 %) is left out before the
  confusion matrix is summed (a *risk-coverage* curve, Geifman and El-Yaniv, "Selective
  Classification for Deep Neural Networks", NeurIPS 2017, with mIoU as the risk). Pixels of
  the confidence value at the cut are left out in proportion (a fractional share of that
  value's confusion matrix), so exactly ``f`` of the pixels go. A mIoU that rises says the
  model's doubt sits where its errors are, i.e. where labelling more pays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.confusion import iou_per_class, miou, pixel_accuracy

__all__ = ["ECE_BINS", "EXCLUDED_SHARES", "calibration_report", "confidence_cube",
           "expected_calibration_error", "miou_excluding_least_confident", "reliability_bins"]

#: Bins of the expected calibration error (Guo et al. 2017 use 15).
ECE_BINS = 15
#: Shares of the least-confident labelled pixels left out for the coverage mIoU.
EXCLUDED_SHARES = (0.05, 0.10, 0.20)


def confidence_cube(pred: np.ndarray, target: np.ndarray, confidence: np.ndarray,
                    n: int) -> np.ndarray:
    """(256, n, n) int64 counts of labelled pixels by (confidence value, labelled class,
    predicted class).

    Args:
        pred: (H, W) integer predicted classes in 0..n-1.
        target: (H, W) integer labelled classes; values >= n (255 = ignore) are skipped.
        confidence: (H, W) uint8 confidence (``round(255 * p)``).

    Raises:
        ValueError: shapes differ, confidence is not uint8, or a prediction is outside 0..n-1.
    """
    pred, target, confidence = (np.asarray(a) for a in (pred, target, confidence))
    if not pred.shape == target.shape == confidence.shape:
        raise ValueError(f"pred {pred.shape}, target {target.shape} and confidence "
                         f"{confidence.shape} must have one shape")
    if confidence.dtype != np.uint8:
        raise ValueError(f"confidence must be uint8 (round(255 p)), got {confidence.dtype}")
    keep = target.ravel() < n
    p, t = pred.ravel()[keep].astype(np.int64), target.ravel()[keep].astype(np.int64)
    c = confidence.ravel()[keep].astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= n):
        raise ValueError(f"predictions outside 0..{n - 1}")
    return np.bincount((c * n + t) * n + p, minlength=256 * n * n).reshape(256, n, n)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray,
                     weights: np.ndarray | None = None,
                     n_bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Equal-width confidence bins ``((m - 1) / M, m / M]`` (confidence 0 goes to the first).

    Args:
        confidence: (N,) confidences in [0, 1].
        correct: (N,) 1 where correct, 0 where not (or, with ``weights``, the correct share
            of each entry's pixels).
        weights: (N,) pixels each entry stands for (default 1).
        n_bins: M >= 1.

    Returns:
        One dict per bin: ``lower``, ``upper``, ``pixels`` (weight), ``accuracy`` and
        ``confidence`` (means over the bin; None for an empty bin).

    Raises:
        ValueError: lengths differ, confidence outside [0, 1], or ``n_bins`` < 1.
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    corr = np.asarray(correct, dtype=np.float64).ravel()
    w = np.ones_like(conf) if weights is None else np.asarray(weights, np.float64).ravel()
    if not conf.shape == corr.shape == w.shape:
        raise ValueError(f"confidence, correct and weights differ in length: {conf.size}, "
                         f"{corr.size}, {w.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidence must lie in [0, 1]")
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    px = np.bincount(idx, weights=w, minlength=n_bins)
    acc = np.bincount(idx, weights=w * corr, minlength=n_bins)
    cf = np.bincount(idx, weights=w * conf, minlength=n_bins)
    out = []
    for m in range(n_bins):
        some = px[m] > 0
        out.append({"lower": round(m / n_bins, 4), "upper": round((m + 1) / n_bins, 4),
                    "pixels": float(px[m]),
                    "accuracy": float(acc[m] / px[m]) if some else None,
                    "confidence": float(cf[m] / px[m]) if some else None})
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray,
                               weights: np.ndarray | None = None,
                               n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (Guo et al. 2017, eq. 3) over :func:`reliability_bins`:
    ``sum_m |B_m| / n * |acc(B_m) - conf(B_m)|``; NaN when there are no pixels.

    Raises:
        ValueError: as :func:`reliability_bins`.
    """
    bins = reliability_bins(confidence, correct, weights, n_bins)
    total = sum(b["pixels"] for b in bins)
    if total <= 0:
        return float("nan")
    return float(sum(b["pixels"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in bins if b["pixels"] > 0))


def miou_excluding_least_confident(cube: np.ndarray, share: float) -> dict[str, float]:
    """mIoU and pixel accuracy of the labelled pixels left after the least-confident
    ``share`` of them is taken out (see the module docstring).

    Args:
        cube: (256, C, C) counts from :func:`confidence_cube` (summed over images).
        share: 0 <= share < 1.

    Returns:
        ``excluded_percent``, ``miou``, ``pixel_accuracy``, ``confidence_cut`` (the
        confidence p at which the cut falls), ``per_class_iou`` (C values, NaN where
        undefined) and ``labelled_pixels_kept`` (C shares 0-1 of each class's labelled
        pixels left: a class whose pixels are mostly doubted leaves the mean).

    Raises:
        ValueError: ``share`` outside [0, 1) or ``cube`` not (256, C, C).
    """
    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 3 or cube.shape[0] != 256 or cube.shape[1] != cube.shape[2]:
        raise ValueError(f"cube must be (256, C, C), got {cube.shape}")
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    per_value = cube.sum((1, 2))
    drop = share * per_value.sum()
    below = np.concatenate([[0.0], np.cumsum(per_value)])  # pixels below value v
    v = int(np.searchsorted(below[1:], drop, side="right"))  # the value the cut falls in
    v = min(v, 255)
    kept = cube[v + 1:].sum(0)
    if per_value[v] > 0:
        kept = kept + cube[v] * (1 - (drop - below[v]) / per_value[v])
    labelled = cube.sum((0, 2))
    return {"excluded_percent": round(100 * share, 3), "miou": float(miou(kept)),
            "pixel_accuracy": float(pixel_accuracy(kept)), "confidence_cut": round(v / 255, 4),
            "per_class_iou": [float(x) for x in iou_per_class(kept)],
            "labelled_pixels_kept": [float(k / n) if n else float("nan")
                                     for k, n in zip(kept.sum(1), labelled, strict=True)]}


def _rounded(entry: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """An entry of :func:`miou_excluding_least_confident` for JSON: 4 decimals, NaN -> None,
    per-class lists as {class name: value}."""
    def r(x):
        return None if not np.isfinite(x) else round(float(x), 4)

    out = {}
    for k, v in entry.items():
        if isinstance(v, list):
            out[k] = {nm: r(x) for nm, x in zip(names, v, strict=True)}
        else:
            out[k] = v if k == "excluded_percent" else r(v)
    return out


def calibration_report(cube: np.ndarray, names: Sequence[str],
                       shares: Sequence[float] = EXCLUDED_SHARES,
                       n_bins: int = ECE_BINS) -> dict[str, Any]:
    """The ``calibration`` section of ``metrics.json`` from a (256, C, C) confidence cube.

    Returns:
        ``ece`` (M = ``n_bins``), ``n_bins``, ``method``, ``mean_confidence``,
        ``pixel_accuracy``, ``reliability`` (:func:`reliability_bins`),
        ``mean_confidence_per_class`` (over the pixels predicted as each class),
        ``miou_all`` and ``excluding_least_confident`` (one
        :func:`miou_excluding_least_confident` per share).
    """
    cube = np.asarray(cube, dtype=np.int64)
    n = cube.shape[1]
    p = np.arange(256) / 255.0
    totals = cube.sum((1, 2)).astype(np.float64)
    correct = np.trace(cube, axis1=1, axis2=2).astype(np.float64)
    frac = np.divide(correct, totals, out=np.zeros(256), where=totals > 0)
    bins = reliability_bins(p, frac, totals, n_bins)
    ece = expected_calibration_error(p, frac, totals, n_bins)
    conf = cube.sum(0)
    pred_by_value = cube.sum(1)  # (256, C): pixels predicted as each class per value
    pred_px = pred_by_value.sum(0)
    mean_pc = {nm: (round(float((pred_by_value[:, i] * p).sum() / pred_px[i]), 4)
                    if pred_px[i] else None) for i, nm in enumerate(names[:n])}
    total = totals.sum()

    def r(x):
        return None if not np.isfinite(x) else round(float(x), 4)

    return {
        "ece": r(ece), "n_bins": n_bins,
        "method": "expected calibration error, Guo et al. 2017 (ICML), eq. 3: equal-width "
                  "bins of the stored confidence round(255 p) / 255, p = max softmax",
        "mean_confidence": r((totals * p).sum() / total) if total else None,
        "pixel_accuracy": r(pixel_accuracy(conf)),
        "reliability": [{**b, "pixels": int(b["pixels"]),
                         "accuracy": None if b["accuracy"] is None else round(b["accuracy"], 4),
                         "confidence": None if b["confidence"] is None
                         else round(b["confidence"], 4)} for b in bins],
        "mean_confidence_per_class": mean_pc,
        "miou_all": r(miou(conf)),
        "excluding_least_confident": [_rounded(miou_excluding_least_confident(cube, s), names)
                                      for s in shares],
    }
