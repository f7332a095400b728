"""Stage 2, ``segment_row``: claim a row, read its strip with halo, run tiled inference, write
the uint8 label strip checkpoint and its microstructure partial (:mod:`worker.stages.measuring`),
then mark the row done with its class pixel counts."""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import structlog

from core.spec import JobSpec
from core.states import JobStatus, RowStatus
from imaging.reading import image_rows, open_image, read_nodata_rows
from imaging.rendering import png_bytes, shrink_rows, thumbnail_factor
from imaging.stitching import read_strip, write_strip
from microstructure.fractions import label_counts
from queues.names import REDUCE_TASK, ROW_TASK
from storage.blobs.layout import (
    ROW_CHECKPOINT_TAG,
    confidence_counts_key,
    confidence_row_key,
    inference_row_key,
    row_key,
    thumbnail_row_key,
)
from storage.errors import BlobNotFoundError, StorageError
from worker.context import WorkerContext
from worker.errors import PERMANENT_ERRORS, describe
from worker.leases import ROWS_IN_FLIGHT, Renewal
from worker.spot import draining
from worker.stages.confidence import confidence_counts, counts_to_bytes
from worker.stages.measuring import write_row_partial
from worker.stages.sources import source_path

log = structlog.get_logger(__name__)
_SEGMENTERS_LOCK = threading.Lock()


class LeaseLost(Exception):
    """Another worker took this row over (its lease expired, or this worker was judged dead)
    while this one computed it: the row's blobs and counts are the holder's to write."""


def _still_holding(ctx: WorkerContext, job_id: str, index: int) -> None:
    """Renew the row's lease right before its blobs are written, or raise :class:`LeaseLost`.

    Two workers' labels of one row may differ (bfloat16 on different CPU or GPU kinds: within
    the 0.1 % a package was validated at), and every blob of a row is stored at its
    deterministic key: a worker that lost the row and wrote anyway could leave its strip beside
    the holder's class counts, or its partial beside the holder's strip."""
    if not ctx.table.rows.extend_lease(job_id, index, ctx.worker_id, ctx.settings.lease_seconds):
        raise LeaseLost(f"row {index} of job {job_id} was taken over by another worker")


class LeaseKeeper(Renewal):
    """Context manager: renews a claimed row's lease every ``lease_seconds / 3`` from a daemon
    thread while the row is processed, so only a dead worker's lease expires.

    A failed renewal (job table briefly unreachable) is logged and retried at the next tick;
    a lost lease (another worker took the row over) costs only this worker's work: it checks
    that it still holds the row before it stores anything (:func:`_still_holding`) and leaves
    the row to the holder, whose blobs and counts
    (:meth:`RowRecords.complete <storage.jobtable.row_records.RowRecords.complete>`, once) then
    belong together.
    """

    def __init__(self, ctx: WorkerContext, job_id: str, index: int):
        lease = ctx.settings.lease_seconds
        super().__init__(
            lambda: ctx.table.rows.extend_lease(job_id, index, ctx.worker_id, lease),
            max(0.5, lease / 3), f"row-{index}", job_id=job_id, row=index,
        )


def segmenter_for(ctx: WorkerContext, job, spec: JobSpec | None = None):
    """The job's model, loaded once per worker process and cached by (name, version, sha256,
    precision).

    The precision is the job spec's where it names one (:attr:`core.spec.JobSpec.precision`),
    else the worker's ``PELLETSEG_PRECISION``: a worker serving jobs of both kinds holds one
    segmenter per precision. ``spec`` is the job's spec where the caller has read it already
    (else it is read from ``job.spec``).

    Raises:
        ModelPackageError: the stored package is missing or fails its checksum.
        SpecError: the job's stored spec cannot be read.
    """
    from worker.engine.segmenter import Segmenter

    spec = spec or JobSpec.from_stored(job.spec)
    precision = spec.precision or ctx.settings.precision
    key = (job.model_name, job.model_version, job.model_sha256, precision)
    with _SEGMENTERS_LOCK:  # rows in flight: threads of one worker share one model
        if key not in ctx.segmenters:
            folder = ctx.models.fetch(*key[:3])
            ctx.segmenters[key] = Segmenter(
                folder,
                device=ctx.settings.device,
                channels_last=ctx.settings.channels_last,
                threads=ctx.settings.torch_threads,
                batch_size=ctx.settings.batch_size,
                precision=precision,
                compile=ctx.settings.torch_compile,
                fold_bn=ctx.settings.fold_batchnorm,
                runtime=ctx.settings.runtime,
                cache_dir=ctx.settings.resolved_export_cache_dir,
            )
        return ctx.segmenters[key]


def segment_row(ctx: WorkerContext, job_id: str, index: int) -> str:
    """Process one row record; idempotent and safe under duplicate delivery.

    A row that is done is skipped; a row leased by a live worker is skipped; a checkpoint
    blob left by an attempt that died before updating the table is reused, not recomputed.
    Input errors fail the row and its job at once; other errors return the row to
    ``pending`` (``retry``: the caller has the message redelivered) until ``max_attempts``
    (then row and job fail).

    Returns:
        What happened: ``done``, ``duplicate``, ``skipped:<status>``, ``retry``, ``failed``,
        or ``released`` (claimed while the worker drains on a spot notice: handed back).

    Raises:
        StorageError: the job table is unreachable (the message is redelivered; a row left
            ``running`` goes back to ``pending`` at this worker's next heartbeat, or once the
            worker is dead, :meth:`storage.jobtable.heartbeats.Heartbeats.beat`).
    """
    job = ctx.table.jobs.get(job_id)
    if job.status != JobStatus.RUNNING:
        return f"skipped:job-{job.status}"
    # in flight from before the claim until the outcome is recorded: the heartbeat renews
    # this row's lease, and hands it back if the task stops without an outcome
    with ROWS_IN_FLIGHT.hold(job_id, index):
        return _claim_and_segment(ctx, job, job_id, index)


def _claim_and_segment(ctx: WorkerContext, job, job_id: str, index: int) -> str:
    """:func:`segment_row` from the claim on (the row is in flight)."""
    claim = ctx.table.rows.claim(job_id, index, ctx.worker_id, ctx.settings.lease_seconds)
    if not claim.claimed:
        return f"skipped:{claim.status}"
    if ctx.settings.spot_mode == "release" and draining():
        # A thread of a threads pool got past the task's draining check just before a spot
        # notice released this worker's rows, and claimed after: hand this row back too.
        for released in ctx.table.recovery.release_rows([ctx.worker_id], "released: claimed by a "
                                              f"worker {ctx.worker_id} draining on a spot notice"):
            ctx.enqueue(ROW_TASK, *released)
        return "released"
    started = time.perf_counter()
    key = row_key(job_id, index)
    try:
        with LeaseKeeper(ctx, job_id, index):
            labels, inference = _labels_for_row(ctx, job, index, key)
        # model.json is enough here: a reused checkpoint must not load the model
        pkg = ctx.models.meta(job.model_name, job.model_version)
        counts = label_counts(labels, pkg.n_classes)
        _still_holding(ctx, job_id, index)
        write_row_partial(ctx, job, index, ctx.table.rows.get(job_id, index).y0, labels, pkg)
    except LeaseLost as e:  # the holder writes and counts the row; nothing of ours is stored
        log.warning("row.lease_lost", job_id=job_id, row=index, error=str(e))
        return "duplicate"
    except PERMANENT_ERRORS as e:
        log.warning("row.failed", job_id=job_id, row=index, error=str(e))
        ctx.table.rows.fail(job_id, index, str(e), max_attempts=0)
        return "failed"
    except StorageError:
        raise
    except Exception as e:
        log.exception("row.error", job_id=job_id, row=index)
        status = ctx.table.rows.fail(
            job_id, index, describe(e), ctx.settings.max_attempts
        )
        if status == RowStatus.PENDING:
            # The task layer has the broker redeliver this same message, so the broker counts
            # the attempt as a receive (worker/deadletter.py); no new message is sent.
            return "retry"
        return "failed"
    checksum = hashlib.sha256(labels.tobytes()).hexdigest()
    completed, reduce_now = ctx.table.rows.complete(
        job_id, index, counts=counts, checksum=checksum, blob_key=key,
        seconds=time.perf_counter() - started, inference=inference,
        worker=ctx.worker_id,  # not a row taken over since _still_holding: its holder counts
    )
    if reduce_now:
        ctx.enqueue(REDUCE_TASK, job_id)
    log.info("row.done", job_id=job_id, row=index, seconds=round(time.perf_counter() - started, 2))
    return "done" if completed else "duplicate"


def _labels_for_row(ctx: WorkerContext, job, index: int, key: str):
    """``(labels, inference)``: the (y1 - y0, W) uint8 labels of a row and how they were
    computed (:attr:`worker.engine.segmenter.Segmenter.inference`), from its checkpoint if one
    exists, else computed and checkpointed (temp file -> atomic blob write). The row's
    confidence count table and strip (:func:`storage.blobs.layout.confidence_counts_key`,
    ``confidence_row_key``) and its ``inference_row_key`` record are stored first, so a rerun
    that finds the label checkpoint finds them too (checkpoints from before they existed
    have none: the reducer then writes no confidence outputs, and ``inference`` is None)."""
    if ctx.blobs.exists(key):
        return read_strip(ctx.local_blob(key)), _stored_inference(ctx, job.id, index)
    spec = JobSpec.from_stored(job.spec)
    row = ctx.table.rows.get(job.id, index)
    segmenter = segmenter_for(ctx, job, spec)
    grid = segmenter.grid(job.width, job.height, spec.geometry, spec.rows_per_task,
                          fit_edges=spec.fit_edges)
    image = open_image(source_path(ctx, job), max_pixels=ctx.settings.max_pixels)
    # a reader thread reads and pads tile row k+1 while the model works on tile row k
    # a converted source.tif was written and checked by the planner: only a source read
    # directly has its deflate checksums verified here (imaging/integrity.py)
    converted = bool((job.outputs or {}).get("source"))
    # the preview's source thumbnail, shrunk from the rows as they are read (not read again)
    factor = thumbnail_factor(job.width, job.height, grid.stride)
    thumbnail: list[np.ndarray] = []
    labels, confidence, stats = segmenter.segment_rows(
        image_rows(image, check_deflate=not converted), grid, row.y0, row.y1,
        segmenter.batch_for(grid.tile_size),
        prefetch=ctx.settings.prefetch_bands, with_confidence=True,
        on_core_rows=None if factor is None
        else lambda rows: thumbnail.append(shrink_rows(rows, factor)),
    )
    nodata_key = (job.outputs or {}).get("nodata")
    if nodata_key:  # what no image covers is not pellet: the mount
        label_nodata_as_mount(read_nodata_rows(ctx.local_blob(nodata_key), row.y0, row.y1),
                              labels, confidence, segmenter.package.classes)
    started = time.perf_counter()
    _still_holding(ctx, job.id, index)
    scratch = ctx.cache_dir / "rows"
    scratch.mkdir(parents=True, exist_ok=True)
    # the count table and the thumbnail first, then the strips: a rerun that finds the label
    # checkpoint finds them all (the reducer recounts a row whose table is missing, and
    # decodes the source for a preview whose rows lack thumbnails)
    ctx.put_row_blob(confidence_counts_key(job.id, index), counts_to_bytes(
        confidence_counts(labels, confidence, segmenter.package.n_classes)))
    if thumbnail:
        ctx.put_row_blob(thumbnail_row_key(job.id, index), png_bytes(np.concatenate(thumbnail)))
    inference = segmenter.inference
    ctx.put_row_blob(inference_row_key(job.id, index), json.dumps(inference).encode())
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        conf_path = Path(tmp) / f"{index:05d}.confidence.tif"
        write_strip(confidence, conf_path)
        ctx.blobs.put_file(confidence_row_key(job.id, index), conf_path, tags=ROW_CHECKPOINT_TAG)
        del confidence
        path = Path(tmp) / f"{index:05d}.tif"
        write_strip(labels, path)
        ctx.blobs.put_file(key, path, tags=ROW_CHECKPOINT_TAG)
    log.info("row.computed", job_id=job.id, row=index, tiles=stats.tiles,
             batch_size=stats.batch_size, strip_s=round(stats.seconds, 3),
             read_s=round(stats.read_s, 3), read_wait_s=round(stats.read_wait_s, 3),
             device_s=round(stats.device_s, 3),
             write_s=round(time.perf_counter() - started, 3),
             **inference)
    return labels, inference


def label_nodata_as_mount(nodata: np.ndarray, labels: np.ndarray, confidence: np.ndarray | None,
                          classes) -> int:
    """Label the pixels no image covers (a CZI mosaic's empty areas between scenes, a slide's
    or an image's fully transparent ones; :func:`imaging.reading.read_nodata_rows`) as the
    model's first ``mount`` class, with confidence 255, in place: the model saw black (or the
    slide's background colour) there, which it may take for pores or a bright phase.
    Nothing changes for a model without a mount class.

    Args:
        nodata: (h, W) bool, True where no image covers the pixel.
        labels: (h, W) uint8 class indices of the same rows.
        confidence: (h, W) uint8 confidence of the same rows, or None.
        classes: The model's classes (:class:`models.package.ClassInfo`), in index order.

    Returns:
        The pixels relabelled.
    """
    mount = next((i for i, c in enumerate(classes) if c.role == "mount"), None)
    if mount is None or not nodata.any():
        return 0
    labels[nodata] = mount
    if confidence is not None:
        confidence[nodata] = 255
    return int(nodata.sum())


def _stored_inference(ctx: WorkerContext, job_id: str, index: int) -> dict | None:
    """The ``inference`` record stored with a row's checkpoint; None for checkpoints written
    before it was recorded, or where it does not parse as a JSON object (logged)."""
    try:
        record = json.loads(ctx.blobs.get_bytes(inference_row_key(job_id, index)))
    except BlobNotFoundError:
        return None
    except ValueError as e:
        log.warning("row.inference_unreadable", job_id=job_id, row=index, error=str(e))
        return None
    return record if isinstance(record, dict) else None
