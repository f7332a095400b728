"""Microstructure in the row -> reducer flow: each row's partial (:func:`write_row_partial`,
called by ``segment_row`` on the strip it just checkpointed) and their exact merge into the
job's microstructure outputs (:func:`write_microstructure`, called by ``reduce_job``).

Where each piece runs, and why: a row worker already holds its strip's labels in memory, so
it computes the strip's :class:`microstructure.RowPartial` (the objects' tables, boundary
edge counts, the strip's first and last label rows with their component ids, and a 16 px
block grid for the pellets and radial profiles; docs/microstructure.md) in one labelling of
the strip, and stores it beside the row checkpoint
(``rows/{r:05d}.micro.npz``). The reducer then reads only these small partials, not the
label map: objects cut by row boundaries are joined there through the stored edge rows, so
size distributions and boundary lengths are exact over the whole image while the reducer's
memory stays bounded by the partials, not by the image.

A partial is a pure function of the row's label strip, so a row that is retried, reused from
its checkpoint, or a job resumed after a crash gives the same bytes; a partial that is
missing (rows done before this code existed, a worker that died between the checkpoint and
the partial) or unreadable (another partial version) is recomputed by the reducer from the
row checkpoint, with identical results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import structlog

from imaging.stitching import read_strip
from microstructure import (
    ClassInfo,
    RowPartial,
    classes_from_mappings,
    merge_partials,
    render_outputs,
    row_partial,
)
from models.package import ModelPackage
from storage.blobs.layout import row_partial_key
from worker.context import WorkerContext

log = structlog.get_logger(__name__)

#: Band width of the radial profiles (µm, or px without a pixel size).
BAND_WIDTH_UM = 50.0


def micro_classes(pkg: ModelPackage) -> list[ClassInfo]:
    """The microstructure class table of a model package: label value = class index, the
    package's roles (mount, pore, phase) and colours."""
    return classes_from_mappings([{"name": c.name, "value": c.index, "role": c.role,
                                   "colour": tuple(c.rgb)} for c in pkg.classes])


def job_pixel_size(job) -> float | None:
    """The job's pixel size (µm/px) as planning resolved it (``outputs["pixel_size_um"]``),
    else the one given with the job (jobs planned before pixel sizes), else None."""
    outputs = job.outputs or {}
    if "pixel_size_um" in outputs:
        return outputs["pixel_size_um"]
    return (job.spec or {}).get("pixel_size_um")


def write_row_partial(ctx: WorkerContext, job, index: int, y0: int, labels: np.ndarray,
                      pkg: ModelPackage) -> bool:
    """Store the microstructure partial of row ``index`` (core labels (h, W) uint8, first
    row = image row ``y0``) at ``rows/{index:05d}.micro.npz``; idempotent.

    Returns:
        True if written, False if a partial was already stored (the same bytes, since a
        partial is a pure function of the strip).

    Raises:
        ValueError: a label value that is not a class of the package.
        StorageError: the store is unreachable.
    """
    key = row_partial_key(job.id, index)
    if ctx.blobs.exists(key):
        return False
    started = time.perf_counter()
    part = row_partial(labels, y0=y0, image_shape=(job.height, job.width),
                       classes=micro_classes(pkg))
    ctx.put_row_blob(key, part.to_bytes())
    log.info("row.partial", job_id=job.id, row=index,
             seconds=round(time.perf_counter() - started, 3))
    return True


def row_partials(ctx: WorkerContext, job, rows: Sequence, classes: Sequence[ClassInfo]
                 ) -> Iterator[RowPartial]:
    """The stored partial of each row in order; a missing or unreadable one is recomputed
    from the row's checkpoint strip and stored."""
    for r in rows:
        key = row_partial_key(job.id, r.index)
        part = None
        if ctx.blobs.exists(key):
            try:
                part = RowPartial.from_bytes(ctx.blobs.get_bytes(key))
            except ValueError as e:
                log.warning("reduce.partial_unreadable", job_id=job.id, row=r.index, error=str(e))
        if part is None:
            labels = read_strip(ctx.local_blob(r.blob_key))
            part = row_partial(labels, y0=r.y0, image_shape=(job.height, job.width),
                               classes=classes)
            ctx.put_row_blob(key, part.to_bytes())
            log.info("reduce.partial_recomputed", job_id=job.id, row=r.index)
        yield part


def write_microstructure(ctx: WorkerContext, job, rows: Sequence, pkg: ModelPackage,
                         work: Path) -> dict:
    """Merge the rows' partials and write the microstructure outputs into ``work``
    (``microstructure.json``, ``pellets.csv``, ``size_distributions.csv``,
    ``boundaries.csv``, ``radial_profiles.csv``, ``radial_profiles.png``).

    Returns:
        The ``microstructure.json`` document, its ``source`` naming the job and model.

    Raises:
        ValueError: partials that do not tile the image (a row missing or twice) or a
            damaged row checkpoint.
    """
    started = time.perf_counter()
    classes = micro_classes(pkg)
    partials = list(row_partials(ctx, job, rows, classes))
    report = merge_partials(partials, classes=classes, pixel_size_um=job_pixel_size(job),
                            band_width_um=BAND_WIDTH_UM)
    report["source"] = {"job_id": job.id, "model": {"name": job.model_name,
                        "version": job.model_version, "sha256": job.model_sha256}}
    if report["pixel_size_um"] is not None:  # where planning found it (a job's own, a record)
        report["pixel_size_from"] = (job.outputs or {}).get("pixel_size_from")
    for name, data in render_outputs(report).items():
        (work / name).write_bytes(data)
    log.info("reduce.microstructure", job_id=job.id, rows=len(partials),
             seconds=round(time.perf_counter() - started, 3))
    return json.loads((work / "microstructure.json").read_bytes())
