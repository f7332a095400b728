"""Evaluation of a model package on a labelled dataset split, through the production path.

Every image is labelled by :meth:`worker.engine.segmenter.Segmenter.segment_array` with the package's
tile size and halo (the same tiles, halo crop and argmax the row tasks run), so the figures
are those of the label maps users get. :func:`evaluate_arrays` sums, over the images:

- the confusion matrix (rows = labelled class, columns = predicted; ignored pixels skipped),
  giving per-class IoU, mIoU, pixel accuracy, per-class and mean class accuracy;
- the edge-weighted confusion matrix (:func:`training.confusion.edge_weights`, edge limit N px);
- the phase-fraction table: labelled % vs predicted % of each class over the labelled
  pixels, their absolute error in percentage points (pp), the same restricted to pellet
  classes (``pellet: true``), and the per-image errors (one image ~ one sample measured);
- when ``predict`` also returns the production confidence, its calibration
  (:mod:`training.calibration`: expected calibration error, mIoU without the least-confident
  5 / 10 / 20 % of the pixels).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.geometry import TileGeometry
from models import ModelPackage, ModelPackageError, read_package
from training.calibration import calibration_report, confidence_cube
from training.confusion import (
    class_accuracy,
    confusion_matrix,
    edge_weights,
    iou_per_class,
    mean_class_accuracy,
    miou,
    pixel_accuracy,
    weighted_confusion_matrix,
)
from training.datasets import DatasetError, DatasetSpec, load_dataset_spec, load_split

#: (H, W, 3) uint8 -> (H, W) uint8 labels, or ((H, W) uint8 labels, (H, W) uint8 confidence)
Predict = Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, np.ndarray]]


def _r(v: float, nd: int = 4) -> float | None:
    """Round for JSON; NaN -> None."""
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def _percent(counts: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    c = counts.astype(np.float64) * (1 if mask is None else mask)
    return 100 * c / c.sum() if c.sum() > 0 else np.full(c.shape, np.nan)


def fraction_table(confusion: np.ndarray, names: list[str], pellet: list[bool]) -> list[dict]:
    """Phase fractions of a (C, C) confusion matrix: labelled % (row sums) vs predicted %
    (column sums) of the labelled pixels, absolute error (pp), and the same as % of the pellet
    classes only (None where the class is not a pellet class)."""
    conf = np.asarray(confusion, dtype=np.float64)
    lab, pred = conf.sum(1), conf.sum(0)
    is_pellet = np.array(pellet, dtype=np.float64)
    lp, pp = _percent(lab), _percent(pred)
    lpp, ppp = _percent(lab, is_pellet), _percent(pred, is_pellet)
    rows = []
    for i, name in enumerate(names):
        row = {"name": name, "labelled_percent": _r(lp[i], 3), "predicted_percent": _r(pp[i], 3),
               "abs_error_pp": _r(abs(pp[i] - lp[i]), 3)}
        if pellet[i] and not all(pellet):
            row.update({"labelled_percent_of_pellet": _r(lpp[i], 3),
                        "predicted_percent_of_pellet": _r(ppp[i], 3),
                        "abs_error_of_pellet_pp": _r(abs(ppp[i] - lpp[i]), 3)})
        rows.append(row)
    return rows


def summarise(conf: np.ndarray, names: list[str]) -> dict[str, Any]:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU/accuracy of a (C, C)
    confusion matrix (counts or weights)."""
    iou, acc = iou_per_class(conf), class_accuracy(conf)
    return {"miou": _r(miou(conf)), "pixel_accuracy": _r(pixel_accuracy(conf)),
            "mean_class_accuracy": _r(mean_class_accuracy(conf)),
            "per_class_iou": {n: _r(v) for n, v in zip(names, iou, strict=True)},
            "per_class_accuracy": {n: _r(v) for n, v in zip(names, acc, strict=True)}}


def evaluate_arrays(predict: Predict, data: list[tuple[np.ndarray, np.ndarray]],
                    names: list[str], pellet: list[bool] | None = None, *, edge_limit: int = 3,
                    image_names: list[str] | None = None) -> dict[str, Any]:
    """Metrics of ``predict`` over labelled images (see the module docstring).

    Args:
        predict: (H, W, 3) uint8 RGB -> (H, W) uint8 class indices in 0..C-1, or a pair
            (labels, (H, W) uint8 confidence ``round(255 p)``), which adds ``calibration``.
        data: list of ((H, W, 3) uint8, (H, W) uint8 labelled class indices; 255 = ignore).
        names: The C class names. pellet: C flags (default all True).
        edge_limit: N (px) of the edge-weighted matrix.

    Returns:
        JSON-able dict: ``miou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``per_class``
        [{index, name, iou, accuracy, precision, labelled_pixels, predicted_pixels,
        labelled_percent, predicted_percent, abs_error_pp}], ``confusion_matrix`` (C x C,
        rows = labelled), ``edge_weighted`` {edge_limit_px, formula, confusion_matrix, miou,
        ...}, ``phase_fractions``, ``phase_fraction_mae_pp``, ``per_image``, ``ignored_pixels``;
        ``calibration`` (:func:`training.calibration.calibration_report`) when ``predict``
        gives the confidence.

    Raises:
        ValueError: a prediction has another shape than its mask or is outside 0..C-1.
    """
    n = len(names)
    pellet = list(pellet) if pellet is not None else [True] * n
    image_names = image_names or [f"image {i}" for i in range(len(data))]
    conf, wconf = np.zeros((n, n), np.int64), np.zeros((n, n))
    per_image, ignored = [], 0
    cube = None  # (256, C, C) counts by confidence value, when predict gives confidence
    for name, (img, mask) in zip(image_names, data, strict=True):
        t0 = time.monotonic()
        pred = predict(img)
        if isinstance(pred, tuple):
            pred, confidence = pred
            if confidence.shape != mask.shape:
                raise ValueError(f"{name}: confidence {confidence.shape} != mask {mask.shape}")
            part = confidence_cube(pred, mask, confidence, n)
            cube = part if cube is None else cube + part
        if pred.shape != mask.shape:
            raise ValueError(f"{name}: prediction {pred.shape} != mask {mask.shape}")
        c = confusion_matrix(pred, mask, n)
        conf += c
        wconf += weighted_confusion_matrix(pred, mask, n, edge_weights(mask, edge_limit))
        ignored += int((mask >= n).sum())
        fr = fraction_table(c, names, pellet)
        per_image.append({"image": name, "miou": _r(miou(c)), "pixel_accuracy": _r(pixel_accuracy(c)),
                          "labelled_percent": {f["name"]: f["labelled_percent"] for f in fr},
                          "predicted_percent": {f["name"]: f["predicted_percent"] for f in fr},
                          "abs_error_pp": {f["name"]: f["abs_error_pp"] for f in fr},
                          "seconds": round(time.monotonic() - t0, 2)})
    base, weighted = summarise(conf, names), summarise(wconf, names)
    fractions = fraction_table(conf, names, pellet)
    lab, pred_px = conf.sum(1), conf.sum(0)
    prec = np.where(pred_px > 0, np.diag(conf) / np.maximum(pred_px, 1), np.nan)
    per_class = [{"index": i, "name": nm, "iou": base["per_class_iou"][nm],
                  "accuracy": base["per_class_accuracy"][nm], "precision": _r(prec[i]),
                  "labelled_pixels": int(lab[i]), "predicted_pixels": int(pred_px[i]),
                  "labelled_percent": fractions[i]["labelled_percent"],
                  "predicted_percent": fractions[i]["predicted_percent"],
                  "abs_error_pp": fractions[i]["abs_error_pp"]} for i, nm in enumerate(names)]
    errs = [f["abs_error_pp"] for f in fractions if f["abs_error_pp"] is not None]
    img_mae = {nm: _r(np.mean([im["abs_error_pp"][nm] for im in per_image
                               if im["abs_error_pp"][nm] is not None] or [np.nan]), 3)
               for nm in names}
    extra = {} if cube is None else {"calibration": calibration_report(cube, names)}
    return {
        **extra,
        "classes": list(names), "images": len(data), "labelled_pixels": int(conf.sum()),
        "ignored_pixels": ignored, "miou": base["miou"], "pixel_accuracy": base["pixel_accuracy"],
        "mean_class_accuracy": base["mean_class_accuracy"], "per_class": per_class,
        "confusion_matrix": conf.tolist(),
        "edge_weighted": {
            "edge_limit_px": edge_limit,
            "formula": "w = min(d, N) / N, d = Euclidean distance (px) to the nearest pixel "
                       "with another label (scipy.ndimage.distance_transform_edt)",
            "confusion_matrix": np.round(wconf, 3).tolist(), "miou": weighted["miou"],
            "pixel_accuracy": weighted["pixel_accuracy"],
            "mean_class_accuracy": weighted["mean_class_accuracy"],
            "per_class_iou": weighted["per_class_iou"]},
        "phase_fractions": fractions,
        "phase_fraction_mae_pp": _r(np.mean(errs) if errs else np.nan, 3),
        "phase_fraction_per_image_mae_pp": img_mae,
        "per_image": per_image,
    }


def class_mapping(pkg: ModelPackage, spec: DatasetSpec) -> np.ndarray:
    """(256,) uint8 lookup: dataset class index -> package class index, matched by name
    (255 stays 255 = ignore).

    Raises:
        ModelPackageError: a dataset class has no package class of the same name, or the
            label values of a matched class differ (value datasets only).
    """
    by_name = {c.name: c for c in pkg.classes}
    lut = np.full(256, 255, np.uint8)
    problems = []
    for i, c in enumerate(spec.classes):
        p = by_name.get(c.name)
        if p is None:
            problems.append(f"dataset class {c.name!r} is not a class of the model")
            continue
        if spec.mask_format == "values" and p.label_value != c.value:
            problems.append(f"class {c.name!r}: dataset value {c.value}, model label_value "
                            f"{p.label_value}")
        lut[i] = p.index
    if problems:
        raise ModelPackageError(f"model {pkg.name} {pkg.version} does not fit dataset "
                                f"{spec.name}: " + "; ".join(problems) +
                                f" (model classes: {[c.name for c in pkg.classes]})")
    return lut


def evaluate_package(package_dir: str | Path, data: list[tuple[np.ndarray, np.ndarray]], *,
                     device: str = "cpu", threads: int = 0, batch_size: int = 0,
                     edge_limit: int = 3, image_names: list[str] | None = None,
                     geometry: TileGeometry | None = None,
                     tta: str | None = None, edge_pad: int | None = None,
                     labels_out: list[np.ndarray] | None = None) -> dict[str, Any]:
    """:func:`evaluate_arrays` of a package through ``Segmenter.segment_array``, the path the
    row tasks run, at the package's tile geometry (the one a job that names none is served
    at) unless ``geometry`` overrides it, and with the package's test-time augmentation
    unless ``tta`` (``none``, ``flips``) overrides it, and with the package's edge padding
    (px of mirrored image a tile may show past the edge) unless ``edge_pad`` overrides it.
    ``data`` masks hold the package's class indices. ``labels_out``, when given, receives
    each image's (H, W) uint8 label map in order (for comparisons that would otherwise label
    the images again).

    Raises:
        ModelPackageError: invalid package or weights failing their sha256.
        ValueError: unknown ``tta``.
    """
    from worker.engine.segmenter import Segmenter

    seg = Segmenter(package_dir, device=device, threads=threads, batch_size=batch_size,
                    tta=tta, edge_pad=edge_pad)
    pkg = seg.package
    geometry = geometry or pkg.geometry
    t, h = geometry.tile_size, geometry.halo
    edge_pad_px = seg.grid(t, t, geometry).edge_pad_px

    def predict(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels, confidence = seg.segment_array(img, geometry, with_confidence=True)
        if labels_out is not None:
            labels_out.append(labels)
        return labels, confidence

    names, pellet = [c.name for c in pkg.classes], [c.pellet for c in pkg.classes]
    out = evaluate_arrays(predict, data, names, pellet, edge_limit=edge_limit,
                          image_names=image_names)
    out["inference"] = {"path": "worker.engine.segmenter.Segmenter.segment_array", "tile_size": t,
                        "halo": h, "edge_pad": edge_pad_px, "device": str(seg.device),
                        "tta": seg.tta,
                        "input_scale": pkg.input_scale,
                        "batch_size": batch_size or seg.batch_size}
    return out


#: Split name recorded when a dataset without ``splits:`` is evaluated whole.
ALL_IMAGES = "all"


def evaluate_dataset(package_dir: str | Path, dataset_yaml: str | Path, *,
                     split: str | None = None,
                     device: str = "cpu", threads: int = 0, batch_size: int = 0,
                     edge_limit: int = 3,
                     geometry: TileGeometry | None = None,
                     tta: str | None = None, edge_pad: int | None = None) -> dict[str, Any]:
    """Evaluate the package in ``package_dir`` on ``split`` of ``dataset_yaml`` (``geometry``,
    ``tta`` and ``edge_pad``: see :func:`evaluate_package`).

    ``split`` None (the default) means ``test`` when the dataset declares ``splits:``, and
    every image (recorded as split ``all``) when it declares none: a folder of labelled
    images is evaluated whole.

    Returns:
        :func:`evaluate_arrays`' dict plus ``model`` (name, version, weights sha256,
        architecture, tile geometry), ``dataset`` (name, yaml, split, image stems),
        ``inference``, ``time_s`` and ``date``.

    Raises:
        DatasetError: invalid dataset, or no such split (the message lists the splits).
        ModelPackageError: invalid package, failing sha256, or classes that do not match.
    """
    t0 = time.monotonic()
    pkg = read_package(package_dir)
    spec = load_dataset_spec(dataset_yaml)
    stems = spec.split_stems()
    if split is None and spec.splits is None:
        split = ALL_IMAGES
        stems = {ALL_IMAGES: sorted({s for ids in stems.values() for s in ids})}
    split = split or "test"
    if not stems.get(split):
        hint = ("; it declares no splits: leave out --split to evaluate every image"
                if spec.splits is None else "")
        raise DatasetError(f"{dataset_yaml}: split {split!r} is missing or empty; splits: "
                           f"{sorted(k for k, v in stems.items() if v)}{hint}")
    lut = class_mapping(pkg, spec)
    data = [(img, lut[mask]) for img, mask in load_split(spec, stems[split])]
    out = evaluate_package(package_dir, data, device=device, threads=threads,
                           batch_size=batch_size, edge_limit=edge_limit,
                           image_names=stems[split], geometry=geometry, tta=tta,
                           edge_pad=edge_pad)
    out["model"] = {"name": pkg.name, "version": pkg.version, "sha256": pkg.weights_sha256,
                    "architecture": pkg.architecture, "encoder": pkg.encoder,
                    "tile_size": pkg.tile_size, "halo": pkg.halo, "edge_pad": pkg.edge_pad,
                    "package_dir": str(Path(package_dir).resolve())}
    out["dataset"] = {"name": spec.name, "yaml": str(Path(dataset_yaml).resolve()),
                      "split": split, "images": stems[split]}
    out["time_s"] = round(time.monotonic() - t0, 1)
    out["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out
