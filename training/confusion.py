"""Segmentation metrics over a confusion matrix (rows = labelled class, columns = predicted):
per-class IoU and mIoU (Jaccard index, as in the PASCAL VOC benchmark), pixel accuracy, class
accuracy, a confusion matrix weighted by the distance to the nearest label border, and one
per depth inside the labelled regions."""

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


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Share of labelled pixels predicted correctly: trace / sum (NaN for an empty matrix)."""
    c = np.asarray(confusion, dtype=np.float64)
    return float(np.trace(c) / c.sum()) if c.sum() > 0 else float("nan")


def class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """(C,) float64 per-class accuracy (recall) TP / labelled pixels of the class; NaN where
    the class has no labelled pixel. Their mean is the "mean accuracy" of Long, Shelhamer and
    Darrell, "Fully convolutional networks for semantic segmentation", CVPR 2015."""
    c = np.asarray(confusion, dtype=np.float64)
    rows = c.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(c) / rows, np.nan)


def mean_class_accuracy(confusion: np.ndarray) -> float:
    """Mean of :func:`class_accuracy` over classes with labelled pixels; NaN if none."""
    acc = class_accuracy(confusion)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def edge_weights(target: np.ndarray, edge_limit: int = 3) -> np.ndarray:
    """(H, W) float64 weights that down-weight pixels near a label border.

    ``w(p) = min(d(p), N) / N`` with ``N = edge_limit`` (px) and ``d(p)`` the Euclidean
    distance (px, centre to centre) from pixel p to the nearest pixel with a different label
    (``scipy.ndimage.distance_transform_edt`` of ``target == target[p]``). A pixel touching
    another label (d = 1) gets 1/N, one N px or more inside its region gets 1; the image edge
    is not a border; ignored pixels (label 255) count as a different label for their
    neighbours. ``N = 0`` gives w = 1 everywhere.

    Why: hand-drawn phase boundaries are uncertain by a few px, and a model should not be
    ranked on them. This is a soft version of the "void border" evaluation of the LumenStone
    authors' petroscope package (pixels within a border width are excluded) and the
    complement of the trimap band evaluation of Kohli, Ladicky and Torr, "Robust higher order
    potentials for enforcing label consistency", IJCV 82 (2009) (accuracy within a band of
    N px around boundaries); the linear ramp is this project's choice.

    Args:
        target: (H, W) integer labels.
        edge_limit: N >= 0 (px).

    Raises:
        ValueError: negative ``edge_limit`` or ``target`` not 2-D.
    """
    target = np.asarray(target)
    if edge_limit < 0 or target.ndim != 2:
        raise ValueError(f"need a 2-D target and edge_limit >= 0, got {target.shape}, {edge_limit}")
    if edge_limit == 0:
        return np.ones(target.shape)
    return np.minimum(label_depth(target, edge_limit), edge_limit) / edge_limit


def label_depth(target: np.ndarray, limit: int | None = None) -> np.ndarray:
    """(H, W) float64 depth of each pixel inside its label region: the Euclidean distance (px,
    centre to centre) to the nearest pixel with a different label
    (``scipy.ndimage.distance_transform_edt`` of ``target == target[p]``); 1 for a pixel
    touching another label, inf where one label fills the image. The image edge is not a
    border; ignored pixels (label 255) are a label of their own. With ``limit`` (px) only
    depths up to it are exact (each region is measured within its bounding box grown by
    ``limit + 1`` px, which is faster); deeper pixels get some depth > ``limit``.

    Raises:
        ValueError: ``target`` is not 2-D.
    """
    from scipy.ndimage import distance_transform_edt

    target = np.asarray(target)
    if target.ndim != 2:
        raise ValueError(f"need a 2-D target, got {target.shape}")
    dist = np.empty(target.shape)
    h, w = target.shape
    for v in np.unique(target):
        region = target == v
        if region.all():
            dist[:] = np.inf
            break
        y0, y1, x0, x1 = 0, h, 0, w
        if limit is not None:
            # Only depths up to the limit matter: the region's bounding box grown by limit + 1
            # px has a ring with no region pixel, so clipped depths are exact.
            ys, xs = np.nonzero(region.any(1))[0], np.nonzero(region.any(0))[0]
            y0, y1 = max(0, ys[0] - limit - 1), min(h, ys[-1] + limit + 2)
            x0, x1 = max(0, xs[0] - limit - 1), min(w, xs[-1] + limit + 2)
        sub = region[y0:y1, x0:x1]
        if sub.all():  # the region fills the image window: pad with a far-away border
            d = np.full(sub.shape, np.inf)
        else:
            d = distance_transform_edt(sub)
        view = dist[y0:y1, x0:x1]
        view[sub] = d[sub]
    return dist


def depth_confusion(pred: np.ndarray, target: np.ndarray, n: int,
                    depths: tuple[int, ...]) -> np.ndarray:
    """Confusion matrices of the pixels by their depth inside their labelled region
    (:func:`label_depth`): bin 0 holds depth <= ``depths[0]`` px, bin k depth in
    (``depths[k - 1]``, ``depths[k]``], the last bin depth > ``depths[-1]``. A model that
    labels the edge of large regions well and their inside badly (it saw a phase only as
    small grains in training) shows it here: its recall falls with depth. Rows = labelled
    class, columns = predicted, as :func:`confusion_matrix`.

    Args:
        pred, target: (H, W) integer class indices; target values >= n (ignored) skipped.
        n: Classes.
        depths: Increasing bin bounds (px, > 0).

    Returns:
        (len(depths) + 1, n, n) int64.

    Raises:
        ValueError: ``depths`` empty or not increasing and positive; shapes differ; a
            prediction outside 0..n-1; ``target`` not 2-D.
    """
    if not depths or any(b <= a for a, b in zip((0, *depths), depths, strict=False)):
        raise ValueError(f"depths must be increasing bounds > 0 px, got {depths}")
    target = np.asarray(target)
    depth = label_depth(target)
    bins = np.searchsorted(np.asarray(depths, np.float64), depth.ravel(), side="left")
    if np.asarray(pred).size != target.size:
        raise ValueError(f"pred has {np.asarray(pred).size} elements, target {target.size}")
    pred, flat = np.asarray(pred).ravel(), target.ravel()
    return np.stack([confusion_matrix(pred[bins == k], flat[bins == k], n)
                     for k in range(len(depths) + 1)])


def weighted_confusion_matrix(pred: np.ndarray, target: np.ndarray, n: int,
                              weights: np.ndarray) -> np.ndarray:
    """(n, n) float64 confusion matrix where each pixel adds its weight (rows = labelled).

    Args:
        pred, target: integer class-index arrays of one shape; target values >= n skipped.
        weights: float array of the same shape (e.g. :func:`edge_weights`).

    Raises:
        ValueError: shapes differ, or a prediction is outside 0..n-1.
    """
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if not pred.shape == target.shape == weights.shape:
        raise ValueError(f"pred, target and weights differ in size: {pred.size}, {target.size}, "
                         f"{weights.size}")
    keep = (target >= 0) & (target < n)
    pred, target, weights = pred[keep].astype(np.int64), target[keep].astype(np.int64), weights[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= n):
        raise ValueError(f"predictions outside 0..{n - 1}")
    return np.bincount(target * n + pred, weights=weights, minlength=n * n).reshape(n, n)
