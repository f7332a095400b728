"""Phase fractions: exact per-class pixel counts -> percentages, JSON document and CSV.

Counts come from the row strips (``label_counts`` of each strip, summed by the reducer), so
fractions are exact pixel counts of the label map, never estimates from a preview.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.package import ClassInfo

CSV_FIELDS = ("index", "name", "pixels", "percent", "percent_of_pellet")
#: ``fractions.json``'s ``pellet_note`` when the model declares no mount class.
NO_MOUNT_NOTE = ("the model declares no mount class (role: mount), so the pellet cannot be "
                 "told from the mount: % of pellet is not given")
#: Elements per np.bincount call: bincount converts its input to intp (8 bytes/element),
#: so a strip is counted in chunks to keep that copy small.
_CHUNK = 1 << 22


def phase_fractions(counts: Sequence[int], classes: Sequence[ClassInfo]) -> list[dict]:
    """Per-class pixel counts and percentages.

    Args:
        counts: Pixel count of each class, ``counts[i]`` for ``classes[i]`` (ints >= 0).
        classes: The model's classes, in index order.

    Returns:
        One dict per class: ``index`` (int), ``name`` (str), ``pixels`` (int), ``percent``
        (float, % of all pixels; 0.0 if there are none) and ``percent_of_pellet`` (float, %
        among the classes with ``pellet=True``; 0.0 if there are no pellet pixels; None for
        classes with ``pellet=False``, e.g. epoxy or background, and None for every class
        when no class is the mount: then the pellet cannot be told from the mount, and
        "% of pellet" would only repeat "% of image").

    Raises:
        ValueError: ``len(counts) != len(classes)``, a negative count, or a class whose
            index is not its position.
        TypeError: a count is not an integer.
    """
    if len(counts) != len(classes):
        raise ValueError(f"{len(counts)} counts for {len(classes)} classes; they must match")
    pixels = []
    for i, (n, c) in enumerate(zip(counts, classes, strict=True)):
        if c.index != i:
            raise ValueError(f"class {c.name!r} at position {i} has index {c.index}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"count of class {c.name!r} is {n!r}, not an integer")
        if n < 0:
            raise ValueError(f"count of class {c.name!r} is negative ({n})")
        pixels.append(int(n))
    total = sum(pixels)
    pellet_total = sum(n for n, c in zip(pixels, classes, strict=True) if c.pellet)
    mount_declared = not all(c.pellet for c in classes)
    out = []
    for n, c in zip(pixels, classes, strict=True):
        if c.pellet and mount_declared:
            of_pellet: float | None = 100.0 * n / pellet_total if pellet_total else 0.0
        else:
            of_pellet = None
        out.append(
            {
                "index": c.index,
                "name": c.name,
                "pixels": n,
                "percent": 100.0 * n / total if total else 0.0,
                "percent_of_pellet": of_pellet,
            }
        )
    return out


def fractions_document(
    job_id: str,
    model: Mapping[str, Any],
    width: int,
    height: int,
    counts: Sequence[int],
    classes: Sequence[ClassInfo],
    pixel_size_um: float | None = None,
    row_inference: Sequence[Mapping[str, Any] | None] | None = None,
    significant_bits: int | None = None,
    nodata_pixels: int | None = None,
    warnings: Sequence[Mapping[str, str]] | None = None,
) -> dict:
    """The ``fractions.json`` document of a job.

    Args:
        job_id: Job identifier.
        model: ``{"name", "version", "sha256"}`` of the model package used.
        width, height: Size of the label map (px).
        counts: Pixel count per class (see :func:`phase_fractions`).
        classes: The model's classes, in index order.
        pixel_size_um: The job's pixel size (µm/px), None when unknown.
        row_inference: How each row's labels were computed, in row order (the rows'
            ``inference`` records; None for a row without one); None: not recorded.
        significant_bits: The significant bits a 16-bit source was converted with
            (:attr:`core.spec.JobSpec.significant_bits`); None for other sources.
        nodata_pixels: Pixels no image covers, labelled as the mount (docs/formats.md, "no
            data"); None where the source has none.
        warnings: The job's warnings (:mod:`core.job_warnings`: ``{"code", "message"}``,
            found at planning); None or empty: none.

    Returns:
        ``{"job_id", "model": {name, version, sha256}, "width", "height", "pixels_total",
        "pixel_size_um", "mount_class_declared", "classes": phase_fractions(...)}``, plus
        ``"pellet_note"`` (:data:`NO_MOUNT_NOTE`) when no class is the mount and
        ``"inference": inference_summary(row_inference)`` when given, and
        ``"significant_bits"`` and ``"nodata_pixels"`` when given, ``"warnings"`` when there
        are any (JSON-serialisable).

    Raises:
        ValueError: ``sum(counts) != width * height`` (a row was lost or counted twice), a
            model field is missing, or any error of :func:`phase_fractions`.
    """
    missing = [k for k in ("name", "version", "sha256") if k not in model]
    if missing:
        raise ValueError(f"model is missing {', '.join(missing)}")
    if width < 0 or height < 0:
        raise ValueError(f"image size {width}x{height} is negative")
    fractions = phase_fractions(counts, classes)
    counted = sum(f["pixels"] for f in fractions)
    if counted != width * height:
        raise ValueError(
            f"job {job_id}: class counts sum to {counted} pixels but the image has "
            f"{width}x{height} = {width * height}; a row is missing or counted twice"
        )
    doc = {
        "job_id": job_id,
        "model": {k: model[k] for k in ("name", "version", "sha256")},
        "width": int(width),
        "height": int(height),
        "pixels_total": counted,
        "pixel_size_um": None if pixel_size_um is None else float(pixel_size_um),
        "mount_class_declared": not all(c.pellet for c in classes),
        "classes": fractions,
    }
    if not doc["mount_class_declared"]:
        doc["pellet_note"] = NO_MOUNT_NOTE
    if row_inference is not None:
        doc["inference"] = inference_summary(row_inference)
    if significant_bits is not None:
        doc["significant_bits"] = int(significant_bits)
    if nodata_pixels is not None:
        doc["nodata_pixels"] = int(nodata_pixels)
    if warnings:
        doc["warnings"] = [{"code": str(w["code"]), "message": str(w["message"])}
                           for w in warnings]
    return doc


#: The fields of a row's ``inference`` record that ``fractions.json`` reports.
INFERENCE_FIELDS = ("runtime", "device", "precision", "f32_convs", "tta")


def inference_summary(row_inference: Sequence[Mapping[str, Any] | None]) -> list[dict]:
    """How a job's labels were computed: one entry per distinct way, in order of first row.

    Rows of one job may be computed differently: a package served in bfloat16 where the
    worker's CPU has bfloat16 units and in float32 elsewhere gives labels that differ on a
    few pixels per 10,000 (docs/performance.md, "Mixed precision").

    Args:
        row_inference: Per row, in row order, its record ``{"runtime", "device",
            "precision", "f32_convs", "tta"}`` (other keys are ignored), or None where the
            row has none (computed before it was recorded).

    Returns:
        ``[{"runtime", "device", "precision", "f32_convs", "tta", "rows": [row index, ...]}]``;
        the fields are None for rows without a record.
    """
    groups: dict[tuple, list[int]] = {}
    for index, record in enumerate(row_inference):
        key = tuple((record or {}).get(f) for f in INFERENCE_FIELDS)
        groups.setdefault(key, []).append(index)
    return [{**dict(zip(INFERENCE_FIELDS, key, strict=True)), "rows": rows}
            for key, rows in groups.items()]


def fractions_csv(doc: Mapping[str, Any]) -> str:
    """The ``fractions.csv`` text of a document from :func:`fractions_document`.

    Columns: index,name,pixels,percent,percent_of_pellet; one row per class; floats are
    written at full precision (``repr``), ``percent_of_pellet`` empty where it is None.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in doc["classes"]:
        writer.writerow(
            {
                "index": row["index"],
                "name": row["name"],
                "pixels": row["pixels"],
                "percent": repr(float(row["percent"])),
                "percent_of_pellet": (
                    ""
                    if row["percent_of_pellet"] is None
                    else repr(float(row["percent_of_pellet"]))
                ),
            }
        )
    return buf.getvalue()


def label_counts(labels: np.ndarray, n_classes: int) -> list[int]:
    """Pixel count of each class in a label array.

    Args:
        labels: Integer class indices of any shape, usually an (h, W) uint8 strip.
        n_classes: Number of classes C.

    Returns:
        C ints, ``counts[i]`` = number of elements equal to i; they sum to ``labels.size``.

    Raises:
        ValueError: ``labels`` is not an integer array, ``n_classes < 1``, or a label is
            negative or ``>= n_classes``.
    """
    labels = np.asarray(labels)
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    flat = labels.reshape(-1)
    counts = np.zeros(n_classes, dtype=np.int64)
    if flat.size == 0:
        return counts.tolist()
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= n_classes:
        bad = hi if hi >= n_classes else lo
        raise ValueError(f"label value {bad} is outside 0..{n_classes - 1}")
    for start in range(0, flat.size, _CHUNK):
        counts += np.bincount(flat[start : start + _CHUNK], minlength=n_classes)
    return counts.tolist()
