"""Training losses: cross-entropy with optional class weights plus soft dice, both skipping
ignored pixels (:data:`training.importers.IGNORE`), on hard labels or on class fractions."""

from __future__ import annotations

import numpy as np

from training.importers import IGNORE


def class_pixel_counts(masks: list[np.ndarray], n_classes: int) -> np.ndarray:
    """Pixels of each class in (H, W) uint8 class-index masks, summed over the masks.

    Values >= ``n_classes`` (ignored pixels, :data:`IGNORE`) are not counted.

    Returns:
        (C,) int64 counts (zeros for no masks).
    """
    return sum((np.bincount(m.ravel(), minlength=n_classes)[:n_classes] for m in masks),
               np.zeros(n_classes, np.int64))


def class_weights_inv_sqrt(masks: list[np.ndarray], n_classes: int) -> list[float]:
    """Cross-entropy class weights 1/sqrt(pixel share) of (H, W) class-index masks, scaled to
    a pixel-weighted mean of 1; absent classes get weight 0 (they never occur as targets).
    Ignored pixels (:data:`IGNORE`) are not counted."""
    counts = class_pixel_counts(masks, n_classes)
    share = counts / counts.sum()
    w = np.where(share > 0, 1 / np.sqrt(np.maximum(share, 1e-12)), 0.0)
    return [round(float(v), 4) for v in w / (w * share).sum()]


def segmentation_loss(logits, target, n_classes: int, dice_weight: float = 0.0, weight=None):
    """Cross-entropy (weighted by ``weight``, (C,) float) + ``dice_weight`` * soft dice loss.

    Soft dice = 1 - mean over classes of (2 sum(p * y) + 1) / (sum(p) + sum(y) + 1), summed
    over the batch (Milletari et al., "V-Net", 3DV 2016, with +1 smoothing).

    ``target`` is either hard labels or class fractions (soft targets, the share of each
    class in the image pixels a model pixel covers at a reduced input scale,
    :func:`training.trainer.reduce_fractions`). With fractions q the cross-entropy is
    sum(w_c q_c (-log p_c)) / sum(w_c q_c) over the pixels, and the dice term uses q for y
    and the labelled share sum_c q_c for the validity mask; for one-hot q both terms equal
    the hard-label ones.

    Args:
        logits: (N, C, H, W) float.
        target: (N, H, W) int64 class indices (:data:`IGNORE` pixels are left out of both
            terms), or (N, C, H, W) float class fractions in [0, 1] summing to the labelled
            share of each pixel (at most 1; ignored image pixels count in no class).

    Returns:
        0-d float tensor.
    """
    import torch.nn.functional as F

    if target.dim() == 4:
        return _fraction_loss(logits, target.to(logits.dtype), dice_weight, weight)
    loss = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    if dice_weight > 0:
        valid = (target != IGNORE).unsqueeze(1)
        onehot = F.one_hot(target.where(valid[:, 0], 0), n_classes).permute(0, 3, 1, 2)
        onehot = onehot.to(logits.dtype) * valid
        loss = loss + dice_weight * _soft_dice(logits, onehot, valid)
    return loss


def _fraction_loss(logits, q, dice_weight: float, weight):
    """:func:`segmentation_loss` for (N, C, H, W) class fractions ``q``."""
    wq = q if weight is None else q * weight.to(q.dtype)[None, :, None, None]
    loss = -(wq * logits.log_softmax(1)).sum() / wq.sum().clamp_min(1e-12)
    if dice_weight > 0:
        loss = loss + dice_weight * _soft_dice(logits, q, q.sum(1, keepdim=True))
    return loss


def _soft_dice(logits, y, valid):
    """The soft dice loss of :func:`segmentation_loss` for (N, C, H, W) targets ``y`` (one-hot
    labels or class fractions), the softmax weighted by ``valid`` ((N, 1, H, W): 1 / 0 for
    labelled / ignored pixels, or each pixel's labelled share)."""
    prob = logits.softmax(1) * valid
    inter, total = (prob * y).sum((0, 2, 3)), (prob + y).sum((0, 2, 3))
    return (1 - ((2 * inter + 1) / (total + 1))).mean()
