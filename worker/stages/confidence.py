"""The reducer's confidence outputs: the rows' uint8 confidence strips stitched into a pyramidal
``confidence.tif``, and ``confidence.json``, the share of low-confidence pixels per class.

The *confidence* of a pixel (README, "Glossary") is ``round(255 * p)`` with p the maximum
softmax probability of its tile's forward pass
(:meth:`worker.engine.segmenter.Segmenter.decide`); it is *low* when p < 0.5, i.e. a value
< :data:`LOW_CONFIDENCE_VALUE` (128). The pyramid is written by the same strip stitching
as the label map (:func:`imaging.stitching.save_stitched`: about one strip in memory), by the
reducer or, with ``PELLETSEG_STREAM_REDUCE``, by the streaming stitcher while the rows run
(:mod:`worker.stages.streaming`), with levels box-averaged (``region_shrink="mean"``:
confidence is a quantity, not a class). The summary is counted strip by strip from the label
and confidence checkpoints, exactly, like the phase fractions: each row worker stores its
strip's counts
(:func:`confidence_counts`, :func:`counts_to_bytes`) beside its confidence strip, and the
reducer sums them (exact: counts add), reading a row's strips again only where its counts
are missing or unreadable (rows checkpointed before the counts were stored).

Jobs whose rows were checkpointed before confidence existed have no confidence strips: then
no confidence output is written (:data:`storage.blobs.layout.OPTIONAL_OUTPUTS`), and the job
succeeds as before.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from imaging.stitching import DEFLATE, Strips, read_strip, save_stitched
from models.package import ClassInfo
from storage.blobs.layout import (
    CONFIDENCE,
    CONFIDENCE_JSON,
    confidence_counts_key,
    confidence_row_key,
)
from storage.jobtable.tables import Job, Row
from worker.context import WorkerContext
from worker.stages.measuring import job_pixel_size

__all__ = ["HISTOGRAM_BINS", "LOW_CONFIDENCE_VALUE", "confidence_counts", "confidence_document",
           "counts_from_bytes", "counts_to_bytes", "write_confidence",
           "write_confidence_pyramid"]

log = structlog.get_logger(__name__)

#: Stored confidence values below this are *low*: round(255 p) < 128 exactly when p < 0.5.
LOW_CONFIDENCE_VALUE = 128
#: Equal-width bins of the confidence histogram in ``confidence.json`` (over p in [0, 1]).
HISTOGRAM_BINS = 10
#: Pixels per np.bincount call (bincount copies its input to intp).
_CHUNK = 1 << 22


def confidence_counts(labels: np.ndarray, confidence: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, 256) int64 pixel counts by (label, confidence value) of one strip.

    Args:
        labels: (h, W) uint8 class indices < ``n_classes``.
        confidence: (h, W) uint8 confidence.

    Raises:
        ValueError: shapes differ, or a label is not below ``n_classes``.
    """
    if labels.shape != confidence.shape:
        raise ValueError(f"label strip {labels.shape} and confidence strip {confidence.shape} "
                         "differ in shape; they must be the same row")
    lab, conf = labels.ravel(), confidence.ravel()
    out = np.zeros(n_classes * 256, np.int64)
    for i in range(0, lab.size, _CHUNK):
        code = lab[i:i + _CHUNK].astype(np.int64) * 256 + conf[i:i + _CHUNK]
        if code.size and code.max() >= n_classes * 256:
            raise ValueError(f"label {int(code.max()) // 256} outside 0..{n_classes - 1}")
        out += np.bincount(code, minlength=n_classes * 256)
    return out.reshape(n_classes, 256)


def counts_to_bytes(counts: np.ndarray) -> bytes:
    """A (C, 256) count table as ``.npy`` bytes (int64, no pickle); the bytes depend only on
    the counts, so a row run twice stores the same object."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(counts, dtype=np.int64), allow_pickle=False)
    return buf.getvalue()


def counts_from_bytes(data: bytes, n_classes: int) -> np.ndarray:
    """Read :func:`counts_to_bytes`' bytes back as a (``n_classes``, 256) int64 array.

    Raises:
        ValueError: not such a table (damaged, another shape or type, negative counts).
    """
    try:
        counts = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # numpy raises many kinds of errors on bad input
        raise ValueError(f"not a confidence count table ({type(e).__name__}: {e})") from None
    if counts.shape != (n_classes, 256) or counts.dtype != np.int64 or (counts < 0).any():
        raise ValueError(f"a confidence count table must be ({n_classes}, 256) non-negative "
                         f"int64, got {counts.dtype} {counts.shape}")
    return counts


def _row_counts(ctx: WorkerContext, job: Job, row: Row, strip: Path, n_classes: int) -> np.ndarray:
    """A row's (C, 256) counts: the stored table, else counted from its two strips."""
    key = confidence_counts_key(job.id, row.index)
    if ctx.blobs.exists(key):
        try:
            return counts_from_bytes(ctx.blobs.get_bytes(key), n_classes)
        except ValueError as e:
            log.warning("reduce.confidence_counts_unreadable", job_id=job.id, row=row.index,
                        error=str(e))
    log.info("reduce.confidence_counts_recounted", job_id=job.id, row=row.index)
    return confidence_counts(read_strip(ctx.local_blob(row.blob_key)), read_strip(strip),
                             n_classes)


def _r(v: float, nd: int = 4) -> float:
    return round(float(v), nd)


def confidence_document(job_id: str, counts: np.ndarray,
                        classes: Sequence[ClassInfo]) -> dict[str, Any]:
    """The ``confidence.json`` document of a job.

    Args:
        job_id: The job.
        counts: (C, 256) pixel counts by (class, confidence value) (:func:`confidence_counts`
            summed over the rows).
        classes: The model's C classes in index order.

    Returns:
        ``confidence`` (what the values are), ``low_below`` (0.5), ``pixels_total``,
        ``mean_confidence`` (mean p, 0-1), ``low_confidence_pixels``,
        ``low_confidence_percent`` (% of all pixels), ``histogram`` {``bin_edges``
        (HISTOGRAM_BINS + 1 values of p), ``pixels``}, and ``classes``: per class ``index``,
        ``name``, ``pixels``, ``low_confidence_pixels``, ``low_confidence_percent`` (% of the
        class's pixels; 0.0 where it has none) and ``mean_confidence`` (None where it has none).

    Raises:
        ValueError: ``counts`` is not (len(classes), 256).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(classes), 256):
        raise ValueError(f"counts must be ({len(classes)}, 256), got {counts.shape}")
    p = np.arange(256) / 255.0
    per_class_px = counts.sum(1)
    low = counts[:, :LOW_CONFIDENCE_VALUE].sum(1)
    total = int(per_class_px.sum())
    values = counts.sum(0)
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    bins = np.minimum((p * HISTOGRAM_BINS).astype(int), HISTOGRAM_BINS - 1)
    hist = np.bincount(bins, weights=values, minlength=HISTOGRAM_BINS).astype(np.int64)
    rows = []
    for c in classes:
        n = int(per_class_px[c.index])
        rows.append({
            "index": c.index, "name": c.name, "pixels": n,
            "low_confidence_pixels": int(low[c.index]),
            "low_confidence_percent": _r(100.0 * low[c.index] / n, 3) if n else 0.0,
            "mean_confidence": _r((counts[c.index] * p).sum() / n) if n else None,
        })
    return {
        "job_id": job_id,
        "confidence": "maximum softmax probability p per pixel, stored as round(255 p) in "
                      "confidence.tif (uint8)",
        "low_below": 0.5,
        "pixels_total": total,
        "mean_confidence": _r((values * p).sum() / total) if total else None,
        "low_confidence_pixels": int(low.sum()),
        "low_confidence_percent": _r(100.0 * low.sum() / total, 3) if total else 0.0,
        "histogram": {"bin_edges": [_r(e, 2) for e in edges], "pixels": hist.tolist()},
        "classes": rows,
    }


def write_confidence_pyramid(strip_paths: Strips, out_path: str | Path, *,
                             pixel_size_um: float | None = None) -> None:
    """Stitch uint8 confidence strips top to bottom into one pyramidal OME-TIFF.

    As :func:`imaging.stitching.write_label_pyramid` (OME-XML with the pixel size, deflate,
    256 px tiles, SubIFD levels, streamed), but levels are the mean of each 2x2 block
    (``region_shrink="mean"``): confidence is a measure, not a label.

    Args:
        strip_paths: (h, W) uint8 confidence strips in order, all of width W, or a
            :class:`imaging.stitching.StripStream` of them (a streaming stitcher's).
        out_path: Output TIFF; overwritten.
        pixel_size_um: µm/px of the source, or None when unknown.

    Raises:
        ValueError: no strips, or strips of different widths.
        ImageFormatError: a strip is unreadable or not 1-band uint8.
        pyvips.Error: the output cannot be written.
    """
    from imaging.ome import save_ome_pyramid

    save_stitched(
        strip_paths, out_path,
        lambda image: save_ome_pyramid(image, out_path, name="confidence",
                                       pixel_size_um=pixel_size_um, region_shrink="mean",
                                       **DEFLATE),
    )


def write_confidence(ctx: WorkerContext, job: Job, rows: Sequence[Row],
                     classes: Sequence[ClassInfo], work: Path, pyramid: bool = True) -> bool:
    """Write ``confidence.tif`` and ``confidence.json`` of a job into ``work`` from its rows'
    confidence strips and count tables (a row without a readable table is counted from its
    label and confidence strips). ``pyramid=False``: the JSON only (a streaming stitcher
    stored ``confidence.tif`` already).

    Returns:
        False (nothing written, logged) when a row has no confidence strip (a job
        checkpointed before confidence existed); True when the files were written.

    Raises:
        ImageFormatError: a strip is unreadable or not 1-band uint8 (a damaged strip never
            yields a result).
        ValueError: a confidence strip does not match its label strip.
        StorageError: the store is unreachable.
    """
    keys = [confidence_row_key(job.id, r.index) for r in rows]
    missing = [r.index for r, k in zip(rows, keys, strict=True) if not ctx.blobs.exists(k)]
    if missing:
        log.info("reduce.no_confidence", job_id=job.id, rows_without=len(missing))
        return False
    paths = [ctx.local_blob(k) for k in keys]
    counts = np.zeros((len(classes), 256), np.int64)
    for row, path in zip(rows, paths, strict=True):
        counts += _row_counts(ctx, job, row, path, len(classes))
    if pyramid:
        write_confidence_pyramid(paths, work / CONFIDENCE, pixel_size_um=job_pixel_size(job))
    doc = confidence_document(job.id, counts, classes)
    (work / CONFIDENCE_JSON).write_text(json.dumps(doc, indent=2) + "\n")
    return True
