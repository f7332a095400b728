"""Stage 1, ``plan_job``: validate the source, compute the tile grid, create the row records
and enqueue one ``segment_row`` per row."""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from core.job_warnings import WarningCode, job_warning
from core.spec import JobSpec, SpecError
from core.states import JobStatus, RowStatus
from imaging.errors import DarkSourceError, ImageFormatError, SeveralScenesError
from imaging.formats import SourceInfo, source_info, write_model_ready
from imaging.metadata import read_pixel_size
from imaging.mosaic import demo_folders
from imaging.reading import write_black_fill_nodata
from models import ModelPackage
from models.suitability import demo_model_warning, pixel_size_warning
from queues.names import ROW_TASK, STITCH_TASK
from storage.blobs.layout import DERIVED_FROM, NODATA, SOURCE, output_key
from storage.errors import BlobNotFoundError, NotFoundError
from worker.cache import job_folder
from worker.context import WorkerContext
from worker.engine.tiling import TileGrid
from worker.errors import PERMANENT_ERRORS
from worker.stages.sources import localize

log = structlog.get_logger(__name__)


def plan_job(ctx: WorkerContext, job_id: str) -> list[int]:
    """Plan a ``queued`` job; idempotent.

    Steps: job ``queued -> planning``; resolve the model (exact version and weights sha256);
    open the source header and validate it; if the source is not a tiled 8-bit RGB TIFF,
    convert it once to ``jobs/{job}/source.tif`` so every row reads its strip cheaply (again
    where an earlier attempt converted another version of the source:
    :func:`_discard_stale_derivatives`; a
    16-bit source with the significant bits the job gives or the file records, else all its
    type's (16 unsigned, 15 signed), stored
    as ``outputs["significant_bits"]``: :meth:`imaging.formats.SourceInfo.significant_bits_used`;
    one that nothing describes and that this conversion leaves nearly black is refused by the
    conversion and fails the job: :func:`imaging.formats.check_bit_depth`; where no image covers some pixels, their mask
    beside it, ``jobs/{job}/nodata.tif``, ``outputs["nodata"]``, which the rows label as the
    mount; of a model-ready source, the mask of a stitched mosaic's black fill likewise:
    :func:`imaging.reading.black_fill_nodata`); resolve the pixel size
    (:func:`resolve_pixel_size`, stored as ``outputs["pixel_size_um"]``); find the job's
    warnings (:mod:`core.job_warnings`: the bundled demo model given an image not of its kind,
    :func:`models.suitability.demo_model_warning`; a pixel size outside those the model was
    trained at, :func:`models.suitability.pixel_size_warning`; pixels the file records as not
    square; a stack of which only the first image is read, :func:`planes_message`), stored as
    ``outputs["warnings"]``; record the source's size and version as
    ``outputs["source_identity"]`` (:func:`worker.stages.sources.source_identity`: every later
    read of the original is checked against it); insert one
    ``pending`` row per strip; job ``planning -> running``; enqueue the rows (and, with
    ``PELLETSEG_STREAM_REDUCE``, the job's streaming stitcher, ``worker/stages/streaming.py``).

    A job that is past planning (a duplicate delivery) is left alone. Errors that are the
    input's fault (bad image, unknown model, disallowed URL) fail the job with the reason; an
    OME-TIFF of several scenes given without one also stores them as ``outputs["scenes"]``,
    a dark 16-bit source the camera depth to rerun it with (:func:`_rerun_with`).

    Returns:
        Indices of the rows enqueued (empty for a duplicate or a failed job).

    Raises:
        StorageError: the job table or store is unreachable (the task is retried).
    """
    job = ctx.table.jobs.get(job_id)
    if job.status == JobStatus.QUEUED:
        ctx.table.jobs.transition(job_id, JobStatus.PLANNING, expected=JobStatus.QUEUED)
        job = ctx.table.jobs.get(job_id)
    if job.status != JobStatus.PLANNING:
        log.info("plan.skip", job_id=job_id, status=job.status)
        return []
    try:
        spec = JobSpec.from_stored(job.spec)
        model = ctx.table.models.get(spec.model, spec.model_version)
        settings = ctx.settings
        local, identity = localize(spec.source_url, ctx.cache_dir, job_id,
                                   settings.allowed_source_schemes)
        # any supported format; of an OME-TIFF of several images, the job's scene
        info = source_info(local, max_pixels=settings.max_pixels, scene=spec.scene)
        significant_bits = info.significant_bits_used(spec.significant_bits)
        _discard_stale_derivatives(ctx, job_id, identity)
        source_key = None
        nodata_key = output_key(job_id, NODATA)
        nodata = job_folder(ctx.cache_dir, job_id) / NODATA
        if not info.is_model_ready:
            source_key = output_key(job_id, SOURCE)
            if not ctx.blobs.exists(source_key):
                tmp = job_folder(ctx.cache_dir, job_id) / SOURCE
                write_model_ready(local, tmp, max_pixels=settings.max_pixels,
                                  significant_bits=spec.significant_bits, nodata_path=nodata,
                                  scene=spec.scene)
                if nodata.exists():  # before the source: a job with a source has its mask
                    ctx.blobs.put_file(nodata_key, nodata)
                    nodata.unlink()
                ctx.blobs.put_file(source_key, tmp)
                tmp.unlink(missing_ok=True)
        elif not ctx.blobs.exists(nodata_key) and _black_fill(local, nodata,
                                                              settings.max_pixels):
            ctx.blobs.put_file(nodata_key, nodata)
            nodata.unlink()
        if not ctx.blobs.exists(nodata_key):
            nodata_key = None
        ctx.blobs.put_bytes(output_key(job_id, DERIVED_FROM), json.dumps(identity).encode())
        grid = TileGrid(info.width, info.height, spec.geometry, spec.rows_per_task,
                        fit_edges=spec.fit_edges)
        pixel_size_um, pixel_size_from, warnings = resolve_pixel_size(
            spec.pixel_size_um, local, job_id=job_id, recorded=info.pixel_size_um,
            recorded_by=info.format, ome_image=info.scene or 0)
        warnings += find_warnings(ctx.models.meta(model.name, model.version), spec, info,
                                  pixel_size_um, settings.home)
    except (*PERMANENT_ERRORS, NotFoundError, SpecError) as e:
        log.warning("plan.failed", job_id=job_id, error=str(e))
        ctx.table.jobs.transition(job_id, JobStatus.FAILED, error=str(e), **_rerun_with(e))
        return []
    ctx.table.jobs.set_model(job_id, model.name, model.version, model.sha256)
    ctx.table.rows.insert(job_id, grid.all_strip_bounds())
    moved = ctx.table.jobs.transition(
        job_id,
        JobStatus.RUNNING,
        expected=JobStatus.PLANNING,
        width=info.width,
        height=info.height,
        rows_total=grid.n_strips,
        outputs={"source": source_key, "source_identity": identity,
                 "pixel_size_um": pixel_size_um, "pixel_size_from": pixel_size_from,
                 "significant_bits": significant_bits, "nodata": nodata_key,
                 "warnings": warnings},
    )
    if not moved:
        return []
    pending = [r.index for r in ctx.table.rows.list(job_id, [RowStatus.PENDING])]
    for index in pending:
        ctx.enqueue(ROW_TASK, job_id, index)
    if settings.stream_reduce:  # the pictures are stitched while the rows run
        ctx.enqueue(STITCH_TASK, job_id)
    log.info("plan.done", job_id=job_id, width=info.width, height=info.height, rows=len(pending),
             significant_bits=significant_bits, warnings=[w["code"] for w in warnings])
    return pending


def _discard_stale_derivatives(ctx: WorkerContext, job_id: str, identity: dict) -> None:
    """Delete the converted source and no-data mask an earlier planning attempt of this job
    stored unless they were made from the source as it is now (``identity``, recorded in
    ``jobs/{job}/derived_from.json`` after them): a planner that died after converting, before
    the job ran, must not leave the next attempt rows of the earlier file under the new
    file's identity and size.

    Raises:
        StorageError: the store is unreachable.
    """
    marker = output_key(job_id, DERIVED_FROM)
    try:
        if json.loads(ctx.blobs.get_bytes(marker)) == identity:
            return
    except (BlobNotFoundError, ValueError):  # none, or one written in part: as if absent
        pass
    for name in (DERIVED_FROM, SOURCE, NODATA):
        ctx.blobs.delete(output_key(job_id, name))


def find_warnings(pkg: ModelPackage, spec: JobSpec, info: SourceInfo,
                  pixel_size_um: float | None, home: Path) -> list[dict[str, str]]:
    """The job's warnings (:mod:`core.job_warnings`) from what planning read, beside
    :func:`resolve_pixel_size`'s: a stack of which only the first image is read
    (:func:`planes_message`), the bundled demo model given an image not of its kind
    (:func:`models.suitability.demo_model_warning`; demo images under ``home``), a pixel size
    (µm/px) outside those the model was trained at
    (:func:`models.suitability.pixel_size_warning`), an orientation the outputs do not follow
    (:func:`orientation_message`)."""
    found = []
    if info.planes > 1:
        found.append(job_warning(WarningCode.PLANES_LEFT_OUT, planes_message(info)))
    if info.orientation != 1:
        found.append(job_warning(WarningCode.ORIENTATION_NOT_APPLIED, orientation_message(info)))
    demo = demo_model_warning(pkg, spec.source_url, demo_folders(home), spec.labels)
    if demo:
        found.append(job_warning(WarningCode.DEMO_MODEL, demo))
    unlike = pixel_size_warning(pkg, pixel_size_um)
    if unlike:
        found.append(job_warning(WarningCode.PIXEL_SIZE_UNLIKE_MODEL, unlike))
    return found


def _rerun_with(e: Exception) -> dict:
    """What a rerun of a job refused by ``e`` may be given, as the failed job's outputs (the
    CLI's hint and the dashboard's button read them): a file of several scenes, its scenes
    (``scenes``); a dark 16-bit source, the camera depth that holds its samples
    (``significant_bits_suggested``); else nothing."""
    if isinstance(e, SeveralScenesError):
        return {"outputs": {"scenes": e.scenes}}
    if isinstance(e, DarkSourceError):
        return {"outputs": {"significant_bits_suggested": e.camera_bits}}
    return {}


#: How a viewer shows a file of each EXIF / TIFF orientation (TIFF 6.0 ``Orientation``,
#: EXIF 2.32 tag 0x0112) against its stored pixels.
VIEWER_TURNS = {2: "mirrored left to right", 3: "turned by 180°", 4: "mirrored top to bottom",
                5: "mirrored across its main diagonal", 6: "turned by 90° clockwise",
                7: "mirrored across its other diagonal", 8: "turned by 90° anticlockwise"}


def orientation_message(info: SourceInfo) -> str:
    """The :data:`core.job_warnings.WarningCode.ORIENTATION_NOT_APPLIED` warning of a source
    whose ``orientation`` is 2-8: what viewers show, what the job did and what to do."""
    turn = VIEWER_TURNS.get(info.orientation, f"in orientation {info.orientation}")
    return (f"the file asks viewers to show it {turn} (EXIF orientation {info.orientation}); "
            "the job segmented the pixels as stored, so the label map, the overlay and the "
            "preview are not turned like the image in a photo viewer (the measurements do not "
            "change). For outputs as viewers show it, save the image upright first (e.g. "
            "`vips autorot IN OUT`) and run that")


def planes_message(info: SourceInfo) -> str:
    """The :data:`core.job_warnings.WarningCode.PLANES_LEFT_OUT` warning of a source whose
    ``planes`` > 1: what was read, what was left out and what to do."""
    what = "pages" if info.format in ("TIFF", "BigTIFF") else "Z planes or time points"
    return (f"the file holds {info.planes_text} images of this size ({what}); the job read "
            "only the first. If they are the colour channels of one image (an ImageJ stack), "
            "save it as one RGB image; if a focus or time series, export the plane to segment "
            "as its own image")


def _black_fill(source: Path, nodata: Path, max_pixels: int) -> bool:
    """Write the black-fill no-data mask of a model-ready ``source`` that the rows read as it
    is (:func:`imaging.reading.write_black_fill_nodata`); True if written. A source whose
    pixels cannot be decoded gets none here: its rows fail the job, naming the image rows
    that are damaged and what to do."""
    try:
        return write_black_fill_nodata(source, nodata, max_pixels=max_pixels)
    except ImageFormatError as e:
        log.warning("plan.black_fill_unread", source=source.name, error=str(e))
        return False


#: Where a job's pixel size came from (``outputs["pixel_size_from"]``), for what the format's
#: reader recorded (:attr:`imaging.formats.SourceInfo.pixel_size_um` of a CZI or slide).
FORMAT_RECORDS = {"CZI": "the CZI's scaling (Zeiss metadata)"}


def resolve_pixel_size(given: float | None, source, *, job_id: str = "",
                       recorded: float | None = None, recorded_by: str = "",
                       ome_image: int = 0
                       ) -> tuple[float | None, str | None, list[dict[str, str]]]:
    """The job's pixel size (µm/px), where it came from and the warnings about it: ``given``
    with the job, else the one the source file
    records (:func:`imaging.metadata.read_pixel_size` for TIFF tags, an ImageJ
    calibration and OME-XML, of the OME Image ``ome_image`` read (the job's scene), else
    ``recorded``: what :func:`imaging.formats.source_info` read from a CZI or slide, of
    format ``recorded_by``), else None (outputs in px).

    Returns:
        ``(pixel_size_um, pixel_size_from, warnings)``: ``pixel_size_from`` says where the
        size came from, for reports (``the job``, ``the file's resolution tags, 600 dpi``,
        ...; None without a size), so that a calibration that is not the
        microscope's (an image editor's dpi) can be told and overridden. A source whose
        recorded pixels are not square (x and y differ by more than 1 %) gives None, logged,
        and a :data:`core.job_warnings.WarningCode.PIXELS_NOT_SQUARE` warning (the
        microstructure figures assume square pixels, so such a job must be given its pixel
        size); else no warning.
    """
    if given is not None:
        return float(given), "the job", []
    found = read_pixel_size(source, ome_image)
    if found is None and recorded:
        log.info("plan.pixel_size", job_id=job_id, pixel_size_um=recorded, source="format")
        return float(recorded), FORMAT_RECORDS.get(
            recorded_by, f"the slide's microns per pixel ({recorded_by or 'its format'})"), []
    if found is None:
        log.info("plan.pixel_size", job_id=job_id, pixel_size_um=None, source="none")
        return None, None, []
    x, y, record = found
    if abs(x - y) > 0.01 * max(x, y):
        log.warning("plan.pixel_size.non_square", job_id=job_id, x_um=x, y_um=y)
        return None, None, [job_warning(WarningCode.PIXELS_NOT_SQUARE, (
            f"the file records pixels of {x:.4g} x {y:.4g} µm, not square; the "
            "measurements assume square pixels, so the job has no pixel size and they are "
            "in px. Resample the image to square pixels, or, if the file's calibration is "
            "wrong, rerun the job with its pixel size (--pixel-size-um; pixel_size_um in "
            "the API)"))]
    log.info("plan.pixel_size", job_id=job_id, pixel_size_um=x, source="metadata",
             record=record)
    return float(x), f"the file's {record}", []
