"""Train a segmentation-models-pytorch network on a labelled dataset and write a model package.

Plain functions, no Celery. A dataset is described by a ``dataset.yaml`` (see
:class:`worker.datasets.DatasetSpec`); :func:`train` samples random patches (over-sampling rare classes),
trains with cross-entropy (+ optional soft dice) and AdamW, keeps the weights with the best
validation mIoU and writes them with :func:`worker.packages.write_package`. Never downloads
anything: encoders are randomly initialised.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worker.datasets import DEFAULT_PALETTE, DatasetError, load_dataset_spec, load_split
from worker.metrics import confusion_matrix, iou_per_class, miou
from worker.packages import ModelPackage, write_package


class PatchSampler:
    """Random square patches; a fraction ``p_targeted`` is centred on a pixel of a class
    chosen uniformly among the classes present, which over-samples rare classes."""

    def __init__(self, data: list[tuple[np.ndarray, np.ndarray]], n_classes: int, patch: int,
                 rng: np.random.Generator, p_targeted: float = 0.5, max_coords: int = 20000):
        self.data, self.patch, self.rng, self.p_targeted = data, patch, rng, p_targeted
        self.coords: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(n_classes)]
        for i, (_, mask) in enumerate(data):
            if min(mask.shape) < patch:
                raise ValueError(f"patch size {patch} exceeds training image {i} ({mask.shape})")
            flat = mask.ravel()
            for c in range(n_classes):
                where = np.flatnonzero(flat == c)
                if where.size > max_coords:
                    where = rng.choice(where, max_coords, replace=False)
                if where.size:
                    self.coords[c].append((i, where))
        self.present = [c for c in range(n_classes) if self.coords[c]]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One augmented patch: ((P, P, 3) uint8, (P, P) uint8 class indices)."""
        p, rng = self.patch, self.rng
        if rng.random() < self.p_targeted:
            c = self.present[rng.integers(len(self.present))]
            i, where = self.coords[c][rng.integers(len(self.coords[c]))]
            img, mask = self.data[i]
            y, x = divmod(int(where[rng.integers(where.size)]), mask.shape[1])
            y0 = int(np.clip(y - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, mask.shape[0] - p))
            x0 = int(np.clip(x - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, mask.shape[1] - p))
        else:
            img, mask = self.data[rng.integers(len(self.data))]
            y0 = int(rng.integers(mask.shape[0] - p + 1))
            x0 = int(rng.integers(mask.shape[1] - p + 1))
        return augment(img[y0:y0 + p, x0:x0 + p], mask[y0:y0 + p, x0:x0 + p], rng)


def augment(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """Random horizontal/vertical flip and rot90 of a square (P, P, 3) patch and its (P, P)
    mask; returns contiguous copies."""
    k = int(rng.integers(4))
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        img, mask = img[::-1], mask[::-1]
    return np.ascontiguousarray(np.rot90(img, k)), np.ascontiguousarray(np.rot90(mask, k))


def channel_stats(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (H, W, 3) uint8 images, values scaled to [0, 1]."""
    n, s, s2 = 0, np.zeros(3), np.zeros(3)
    for img in images:
        x = img.reshape(-1, 3).astype(np.float64) / 255.0
        n, s, s2 = n + x.shape[0], s + x.sum(0), s2 + (x * x).sum(0)
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(max(float(v), 1e-3), 6) for v in std]


def to_tensor(batch: np.ndarray, mean, std, device: str = "cpu"):
    """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float32 tensor, channels_last."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).float().div_(255.0)
    x = (x - torch.tensor(mean, device=device)) / torch.tensor(std, device=device)
    return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def predict_image(model, img: np.ndarray, mean, std, device: str = "cpu",
                  crop: int = 1024) -> np.ndarray:
    """Class-index map (H, W) uint8 of an (H, W, 3) uint8 image, predicted in non-overlapping
    crops of at most ``crop`` px, each reflect-padded to a multiple of 32 (no halo)."""
    import torch

    h, w = img.shape[:2]
    out = np.zeros((h, w), np.uint8)
    model.eval()
    with torch.no_grad():
        for y in range(0, h, crop):
            for x in range(0, w, crop):
                tile = img[y:y + crop, x:x + crop]
                th, tw = tile.shape[:2]
                pad = ((0, -th % 32), (0, -tw % 32), (0, 0))
                logits = model(to_tensor(np.pad(tile, pad, mode="reflect")[None], mean, std,
                                         device))
                out[y:y + th, x:x + tw] = logits[0, :, :th, :tw].argmax(0).cpu().numpy()
    return out


def evaluate(model, data, n_classes: int, mean, std, device: str = "cpu",
             crop: int = 1024) -> np.ndarray:
    """Summed (C, C) int64 confusion matrix of ``model`` over ``data`` (see :func:`load_split`),
    predicted with :func:`predict_image`."""
    conf = np.zeros((n_classes, n_classes), np.int64)
    for img, mask in data:
        pred = predict_image(model, img, mean, std, device, crop)
        conf += confusion_matrix(pred, mask, n_classes)
    return conf


def class_weights_inv_sqrt(masks: list[np.ndarray], n_classes: int) -> list[float]:
    """Cross-entropy class weights 1/sqrt(pixel share) of (H, W) class-index masks, scaled to
    a pixel-weighted mean of 1; absent classes get weight 0 (they never occur as targets)."""
    counts = sum(np.bincount(m.ravel(), minlength=n_classes)[:n_classes] for m in masks)
    share = counts / counts.sum()
    w = np.where(share > 0, 1 / np.sqrt(np.maximum(share, 1e-12)), 0.0)
    return [round(float(v), 4) for v in w / (w * share).sum()]


def _loss(logits, target, n_classes: int, dice_weight: float, weight=None):
    import torch.nn.functional as F

    loss = F.cross_entropy(logits, target, weight=weight)
    if dice_weight > 0:
        prob = logits.softmax(1)
        onehot = F.one_hot(target, n_classes).permute(0, 3, 1, 2).to(prob.dtype)
        inter, total = (prob * onehot).sum((0, 2, 3)), (prob + onehot).sum((0, 2, 3))
        loss = loss + dice_weight * (1 - ((2 * inter + 1) / (total + 1))).mean()
    return loss


def _metrics(conf: np.ndarray, names: list[str], prefix: str) -> dict[str, Any]:
    iou = iou_per_class(conf)
    return {f"{prefix}_miou": round(miou(conf), 4),
            f"{prefix}_iou": {n: (None if np.isnan(v) else round(float(v), 4))
                              for n, v in zip(names, iou, strict=True)}}


def train(dataset_yaml: str | Path, *, arch: str = "Unet", encoder: str = "resnet34",
          epochs: int, out_dir: str | Path, name: str, version: str, patch_size: int = 256,
          batch_size: int = 8, lr: float = 1e-3, seed: int = 0,
          arch_params: dict[str, Any] | None = None, device: str = "cpu",
          steps_per_epoch: int | None = None, half_weights: bool = True, progress: bool = True,
          dice_weight: float = 0.0, class_weights: str | list[float] | None = None,
          tile_size: int = 512, halo: int = 64,
          eval_crop: int = 1024) -> ModelPackage:
    """Train a randomly initialised smp model on ``dataset_yaml`` and write a model package.

    Samples ``steps_per_epoch`` batches of ``batch_size`` augmented (patch_size, patch_size)
    patches per epoch (default: about one pass over the training pixels), loss = cross-entropy
    (weighted by ``class_weights``: C floats, or ``"inv_sqrt"`` for
    :func:`class_weights_inv_sqrt` of the training masks) + ``dice_weight`` * soft dice,
    AdamW with cosine decay of ``lr``. After each epoch the mIoU on the ``val`` split is
    measured on whole images (crops of ``eval_crop`` px); the weights of the best epoch (the
    last one if there is no val split) are written to ``out_dir`` (model.json +
    weights.safetensors, float16 if ``half_weights``), with the training images' per-channel
    mean/std (RGB in [0, 1]) as normalisation, and the val (and ``test`` if present) metrics
    of the weights as stored. Deterministic for a given ``seed`` on the same machine.

    Returns:
        The written :class:`ModelPackage`.

    Raises:
        DatasetError: invalid dataset description, images or masks; no ``train`` split.
        ModelPackageError: unknown ``arch``/``encoder``/``arch_params``.
        ValueError: ``patch_size`` not a multiple of 32 or larger than a training image;
            epochs or batch size < 1; ``class_weights`` of the wrong length or kind.
    """
    import segmentation_models_pytorch as smp
    import torch

    from worker.packages import build_model

    t0 = time.monotonic()
    if patch_size % 32 or patch_size < 32:
        raise ValueError(f"patch_size must be a positive multiple of 32, got {patch_size}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    spec = load_dataset_spec(dataset_yaml)
    stems = spec.split_stems()
    if not stems.get("train"):
        raise DatasetError(f"{dataset_yaml}: the 'train' split is empty or missing")
    data = {k: load_split(spec, v) for k, v in stems.items() if k in ("train", "val", "test")}
    n_classes, names = len(spec.classes), [c.name for c in spec.classes]
    mean, std = channel_stats([img for img, _ in data["train"]])
    if class_weights == "inv_sqrt":
        class_weights = class_weights_inv_sqrt([m for _, m in data["train"]], n_classes)
    elif class_weights is not None and (isinstance(class_weights, str)
                                        or len(class_weights) != n_classes):
        raise ValueError(f"class_weights must be 'inv_sqrt' or {n_classes} floats, "
                         f"got {class_weights!r}")
    weight = None if class_weights is None else torch.tensor(class_weights, device=device)
    if steps_per_epoch is None:
        pixels = sum(m.size for _, m in data["train"])
        steps_per_epoch = max(1, round(pixels / (patch_size**2 * batch_size)))

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    meta: dict[str, Any] = {
        "name": name, "version": str(version), "architecture": arch, "encoder": encoder,
        "arch_params": dict(arch_params or {}), "in_channels": 3,
        "classes": [{"index": i, "name": c.name, "label_value": c.value, "pellet": c.pellet,
                     "rgb": c.rgb or DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)]}
                    for i, c in enumerate(spec.classes)],
        "normalisation": {"mean": mean, "std": std}, "tile_size": tile_size, "halo": halo}
    # Validates meta (dummy sha) and builds the network before any time is spent training.
    model = build_model(ModelPackage.model_validate({**meta, "weights_sha256": "0" * 64}))
    model = model.to(device).to(memory_format=torch.channels_last)
    sampler = PatchSampler(data["train"], n_classes, patch_size, rng)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), disable=not progress)
    best: tuple[float, int, dict | None] = (-1.0, 0, None)
    history = []
    with bar:
        task = bar.add_task("training", total=epochs * steps_per_epoch)
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for _ in range(steps_per_epoch):
                imgs, masks = zip(*(sampler.sample() for _ in range(batch_size)), strict=True)
                x = to_tensor(np.stack(imgs), mean, std, device)
                y = torch.from_numpy(np.stack(masks).astype(np.int64)).to(device)
                loss = _loss(model(x), y, n_classes, dice_weight, weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.update(task, advance=1,
                           description=f"epoch {epoch}/{epochs} loss {np.mean(losses):.4f}")
            entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5)}
            if data.get("val"):
                conf = evaluate(model, data["val"], n_classes, mean, std, device, eval_crop)
                entry["val_miou"] = round(miou(conf), 4)
            history.append(entry)
            score = entry.get("val_miou", float(epoch))
            if best[2] is None or score > best[0]:
                best = (score, epoch, copy.deepcopy(model.state_dict()))
            if progress:
                bar.console.print(f"epoch {epoch}: loss {entry['loss']:.4f}  val mIoU "
                                  f"{entry.get('val_miou', float('nan')):.4f}")
    # Metrics of the weights as stored (float16-rounded when half_weights).
    model.load_state_dict({k: v.half().float() if half_weights and v.is_floating_point() else v
                           for k, v in best[2].items()})
    metrics: dict[str, Any] = {"best_epoch": best[1], "history": history}
    for split in ("val", "test"):
        if data.get(split):
            conf = evaluate(model, data[split], n_classes, mean, std, device, eval_crop)
            metrics.update(_metrics(conf, names, split))
            metrics[f"{split}_confusion"] = conf.tolist()
    meta["training"] = {
        "dataset": spec.name, "splits": {k: len(v) for k, v in stems.items()},
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "patch_size": patch_size,
        "batch_size": batch_size, "lr": lr, "optimizer": "AdamW(weight_decay=1e-4), cosine",
        "loss": "cross_entropy" + (f" + {dice_weight} * dice" if dice_weight > 0 else ""),
        "class_weights": None if class_weights is None else list(class_weights),
        "seed": seed, "time_s": round(time.monotonic() - t0, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"device": device, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "segmentation_models_pytorch": smp.__version__},
    }
    meta["metrics"] = metrics
    return write_package(out_dir, model.cpu(), meta, half=half_weights)
