"""Segmentation metrics over a confusion matrix (rows = labelled class, columns = predicted):
per-class IoU and mIoU (Jaccard index, as in the PASCAL VOC benchmark)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    """(n, n) int64 confusion matrix: rows = true class, columns = predicted class.

    Args:
        pred, target: integer class-index arrays of the same shape; target values >= n
            (e.g. 255 = ignore) are skipped.

    Raises:
        ValueError: shapes differ, or a prediction is outside 0..n-1.
    """
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} elements, target {target.size}")
    keep = (target >= 0) & (target < n)
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() >= n):
        raise ValueError(f"predictions outside 0..{n - 1}")
    return np.bincount(target * n + pred, minlength=n * n).reshape(n, n)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """(C,) float64 IoU = TP / (TP + FP + FN) per class; NaN where the class is neither
    present nor predicted."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou(confusion: np.ndarray) -> float:
    """Mean IoU over classes with a defined IoU (see :func:`iou_per_class`); NaN if none."""
    iou = iou_per_class(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
