"""Stage 3, ``reduce_job``: stitch the row strips into the pyramidal label TIFF, the colour
overlay and the preview (:func:`imaging.rendering.write_pictures`); phase fractions are the sums
of the rows' exact pixel counts; the microstructure outputs merge the rows' partials
(:func:`worker.stages.measuring.write_microstructure`).

With ``PELLETSEG_STREAM_REDUCE`` a streaming stitcher (``worker/stages/streaming.py``) has usually
written the three pictures and the confidence pyramid while the rows ran: the reducer then
waits for it while its lease is live, checks its manifest against the rows and only adds the
fractions, the microstructure and ``confidence.json``; without a valid manifest it stitches
the rows itself.

The three products are independent, so the microstructure merge and the confidence pyramid
run in two threads beside the pictures (libvips and numpy release the GIL): the time from
the last row to ``succeeded`` is that of the slowest, not their sum.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import structlog

from core.states import JobStatus
from imaging.reading import count_nodata
from imaging.rendering import write_pictures
from microstructure.fractions import fractions_csv, fractions_document
from storage.blobs.layout import (
    CONFIDENCE,
    FRACTIONS_CSV,
    FRACTIONS_JSON,
    LABELS,
    MICROSTRUCTURE_FILES,
    OPTIONAL_OUTPUTS,
    OUTPUT_FILES,
    OVERLAY,
    PICTURES,
    PREVIEW,
    output_key,
)
from storage.errors import StorageError
from worker.cache import job_folder, remove_job
from worker.context import WorkerContext
from worker.errors import PERMANENT_ERRORS
from worker.stages.confidence import write_confidence
from worker.stages.measuring import job_pixel_size, write_microstructure
from worker.stages.sources import row_thumbnails, source_path
from worker.stages.streaming import wait_for_stitcher

log = structlog.get_logger(__name__)


def reduce_job(ctx: WorkerContext, job_id: str) -> dict | None:
    """Write a ``reducing`` job's outputs and move it to ``succeeded``; idempotent.

    Outputs (keys under ``jobs/{job_id}/``): ``labels.tif`` (pyramidal tiled uint8 label map,
    deflate), ``overlay.tif`` (pyramidal JPEG colour overlay), ``preview.png``,
    ``fractions.json``, ``fractions.csv`` and the microstructure outputs
    (:data:`storage.blobs.layout.MICROSTRUCTURE_FILES`). A job in any other status is left
    alone.

    Returns:
        The fractions document, or None when the job was not ``reducing``.

    Raises:
        StorageError: the job table or store is unreachable (retry or resume reruns it).

    ``confidence.tif`` and ``confidence.json`` (:mod:`worker.stages.confidence`) are written
    here too when every row has a confidence strip (``confidence.tif`` only where a streaming
    stitcher did not store it).
    """
    job = ctx.table.jobs.get(job_id)
    if job.status != JobStatus.REDUCING:
        log.info("reduce.skip", job_id=job_id, status=job.status)
        return None
    started = time.perf_counter()
    try:
        pkg = ctx.models.meta(job.model_name, job.model_version)
        counts = ctx.table.rows.class_counts(job_id, pkg.n_classes)
        rows = ctx.table.rows.list(job_id)
        log.info("reduce.start", job_id=job_id, rows=len(rows))
        doc = fractions_document(
            job_id,
            {"name": job.model_name, "version": job.model_version, "sha256": job.model_sha256},
            job.width,
            job.height,
            counts,
            pkg.classes,
            pixel_size_um=job_pixel_size(job),
            row_inference=[r.inference for r in rows],
            significant_bits=(job.outputs or {}).get("significant_bits"),
            nodata_pixels=None if not (job.outputs or {}).get("nodata")
            else count_nodata(ctx.local_blob(job.outputs["nodata"])),
            warnings=(job.outputs or {}).get("warnings"),
        )
        work = job_folder(ctx.cache_dir, job_id) / "out"
        work.mkdir(parents=True, exist_ok=True)
        # the label strips are fetched once, here: the three products' threads then find them
        # in the cache, and no two threads download one key at once
        strips = [ctx.local_blob(r.blob_key) for r in rows]
        fetched = time.perf_counter()
        with ThreadPoolExecutor(2, thread_name_prefix=f"reduce-{job_id[:8]}") as pool:
            micro = pool.submit(_timed, write_microstructure, ctx, job, rows, pkg, work)
            staged = wait_for_stitcher(ctx, job, rows)  # at once when no stitcher ran
            confidence = pool.submit(_timed, write_confidence, ctx, job, rows, pkg.classes, work,
                                     not staged.confidence)
            pictures = {}
            if not staged.pictures:
                pictures = write_pictures(source_path(ctx, job), strips, pkg.palette(), work,
                                          names=[c.name for c in pkg.classes],
                                          pixel_size_um=job_pixel_size(job),
                                          thumbnails=row_thumbnails(ctx, job, rows))
            _, micro_s = micro.result()
            with_confidence, confidence_s = confidence.result()
        (work / FRACTIONS_JSON).write_text(json.dumps(doc, indent=2) + "\n")
        (work / FRACTIONS_CSV).write_text(fractions_csv(doc))
        products = time.perf_counter()
        outputs = dict(job.outputs or {})
        for name in OUTPUT_FILES:
            if name in MICROSTRUCTURE_FILES and not (work / name).exists():
                continue  # radial_profiles.png: left out when there is no profile
            key = output_key(job_id, name)
            if not (staged.pictures and name in PICTURES):  # a stitcher stored those already
                ctx.blobs.put_file(key, work / name)
            outputs[name.replace(".", "_")] = key
        if with_confidence:
            for name in OPTIONAL_OUTPUTS:
                key = output_key(job_id, name)
                if not (staged.confidence and name == CONFIDENCE):  # the stitcher stored it
                    ctx.blobs.put_file(key, work / name)
                outputs[name.replace(".", "_")] = key
        shutil.rmtree(work, ignore_errors=True)
    except (*PERMANENT_ERRORS, ValueError) as e:
        log.warning("reduce.failed", job_id=job_id, error=str(e))
        ctx.table.jobs.transition(job_id, JobStatus.FAILED, error=f"reducer: {e}")
        return None
    except StorageError:
        raise
    finished = time.perf_counter()
    outputs["reduce_seconds"] = round(finished - started, 3)
    outputs["streamed"] = staged.pictures
    ctx.table.jobs.set_outputs(job_id, outputs)
    ctx.table.jobs.transition(job_id, JobStatus.SUCCEEDED, expected=JobStatus.REDUCING)
    remove_job(ctx.cache_dir, not ctx.blobs.is_local, job_id)  # the rows' copies, the original
    # where the reducer's time went (s, wall; the products overlap in threads): the bench's
    # worker-time budget reads these (benchmarks.pipeline.worker_time_budget)
    log.info("reduce.done", job_id=job_id, seconds=outputs["reduce_seconds"],
             streamed=staged.pictures,
             fetch_s=round(fetched - started, 3),
             labels_s=round(pictures.get(LABELS, 0.0), 3),
             preview_s=round(pictures.get(PREVIEW, 0.0), 3),
             overlay_s=round(pictures.get(OVERLAY, 0.0), 3),
             microstructure_s=round(micro_s, 3), confidence_s=round(confidence_s, 3),
             products_s=round(products - fetched, 3),
             store_s=round(finished - products, 3))
    return doc


def _timed(fn, *args):
    """``(fn(*args), seconds it took)``."""
    started = time.perf_counter()
    return fn(*args), time.perf_counter() - started
