"""``/v1/jobs``: submit, list, inspect, cancel, resume, rerun and delete jobs; fetch their
results."""

from __future__ import annotations

import json
import mimetypes
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from api.deps import BlobsDep, SubmissionsDep, TableDep
from api.schemas import (
    ErrorOut,
    JobCreate,
    JobDeleted,
    JobList,
    JobOptions,
    JobOut,
    JobWarningOut,
    ModelRef,
    RerunRequest,
    ResultsOut,
    WebhookOut,
)
from core.spec import JobSpec
from core.states import JobStatus
from storage.blobs import (
    FRACTIONS_CSV,
    FRACTIONS_JSON,
    MICROSTRUCTURE_JSON,
    OUTPUT_FILES,
    output_key,
)
from storage.blobs.layout import CONFIDENCE_JSON, OPTIONAL_OUTPUTS
from storage.errors import NotFoundError
from storage.jobtable import Job, JobTable, utcnow
from submission import SubmissionService

router = APIRouter(tags=["jobs"])

NOT_FOUND = {404: {"model": ErrorOut, "description": "No job has this id."}}
CONFLICT = {409: {"model": ErrorOut, "description": "Not allowed in the job's status."}}
INVALID = {422: {"model": ErrorOut, "description": "Invalid request."}}
URL_EXPIRES_S = 3600


def job_out(table: JobTable, job: Job) -> JobOut:
    """The API view of ``job`` with its row progress and throughput.

    ``throughput_mpx_s`` is pixels of done rows / seconds from ``started_at`` to
    ``finished_at`` (or now), in megapixels per second; None before any row is done.
    """
    progress = table.rows.progress(job.id)
    spec = job.spec or {}
    throughput = None
    if job.started_at is not None and progress.pixels_done:
        seconds = ((job.finished_at or utcnow()) - job.started_at).total_seconds()
        if seconds > 0:
            throughput = round(progress.pixels_done / 1e6 / seconds, 4)
    return JobOut(
        id=job.id,
        status=job.status,
        source_url=job.source_url,
        labels=spec.get("labels") or {},
        webhook_url=spec.get("webhook_url"),
        webhook=None if job.webhook_event is None else WebhookOut(
            status=job.webhook_status, event=job.webhook_event, attempts=job.webhook_attempts,
            last_error=job.webhook_last_error, delivered_at=job.webhook_delivered_at,
            next_attempt_at=job.webhook_next_at if job.webhook_status == "pending" else None,
        ),
        batch_id=job.batch_id,
        model=ModelRef(name=job.model_name, version=job.model_version, sha256=job.model_sha256),
        tile_size=spec.get("tile_size", 0),
        halo=spec.get("halo", 0),
        pixel_size_um=(job.outputs or {}).get("pixel_size_um", spec.get("pixel_size_um")),
        pixel_size_from=(job.outputs or {}).get("pixel_size_from"),
        precision=spec.get("precision"),
        significant_bits=(job.outputs or {}).get("significant_bits", spec.get("significant_bits")),
        scene=spec.get("scene"),
        scenes=(job.outputs or {}).get("scenes"),
        significant_bits_suggested=(job.outputs or {}).get("significant_bits_suggested"),
        warnings=[JobWarningOut(**w) for w in (job.outputs or {}).get("warnings") or ()],
        width=job.width,
        height=job.height,
        rows_total=job.rows_total if job.rows_total is not None else (progress.total or None),
        rows_done=progress.done,
        rows_running=progress.running,
        rows_pending=progress.pending,
        rows_failed=progress.failed,
        throughput_mpx_s=throughput,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        outputs=sorted(k for k, v in (job.outputs or {}).items() if isinstance(v, str)),
    )


def spec_of(submissions: SubmissionService, body: JobCreate,
            defaults: JobOptions | None = None) -> JobSpec:
    """The checked :class:`JobSpec` of a request body; options it leaves null are taken from
    ``defaults`` (a batch's), labels merged (:meth:`SubmissionService.build_spec` does every
    check).

    Raises:
        SubmissionError: invalid source, upload, options, webhook or model (422).
        UploadStateError: the upload is not complete (409).
    """

    def pick(name: str):
        value = getattr(body, name)
        return value if value is not None or defaults is None else getattr(defaults, name)

    labels = {**(defaults.labels if defaults is not None else {}), **body.labels}
    return submissions.build_spec(
        body.source_url, upload_id=body.upload_id, model=pick("model"),
        model_version=pick("model_version"), tile_size=pick("tile_size"), halo=pick("halo"),
        labels=labels, webhook_url=pick("webhook_url"), pixel_size_um=pick("pixel_size_um"),
        precision=pick("precision"), significant_bits=pick("significant_bits"),
        scene=pick("scene"), confine_files=True,
    )


@router.post(
    "/jobs", status_code=202, response_model=JobOut,
    responses={**INVALID, **CONFLICT, 413: {"model": ErrorOut, "description": "Body too large."}},
)
def create_job(body: JobCreate, request: Request, response: Response, table: TableDep,
               submissions: SubmissionsDep):
    """Submit a job from a ``source_url`` or a completed upload (``upload_id``; 409 while it is
    not complete): it is queued and planned by a worker. With an ``idempotency_key`` used
    before, the first job is returned and nothing new is queued."""
    job = submissions.submit(spec_of(submissions, body), idempotency_key=body.idempotency_key)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_out(table, job)


@router.get("/jobs", response_model=JobList, responses=INVALID)
def list_jobs(
    status: JobStatus | None = Query(None, description="Only jobs in this status."),
    batch: str | None = Query(None, max_length=64, description="Only jobs of this batch id."),
    label: list[str] = Query([], description="key:value; repeat to require several labels."),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**31 - 1),
    *,
    table: TableDep,
):
    """Jobs, newest first, one page at a time."""
    labels: dict[str, str] = {}
    for item in label:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise HTTPException(422, f"label filter {item!r} must look like key:value")
        labels[key] = value
    found = table.jobs.list(status, limit + 1, offset=offset, labels=labels or None,
                               batch_id=batch)
    return JobList(
        jobs=[job_out(table, j) for j in found[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(found) > limit else None,
        workers_live=len(table.heartbeats.live()),
    )


@router.get("/jobs/{job_id}", response_model=JobOut, responses=NOT_FOUND)
def get_job(job_id: str, table: TableDep):
    """One job and its progress."""
    return job_out(table, table.jobs.get(job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses={**NOT_FOUND, **CONFLICT})
def cancel(job_id: str, table: TableDep, submissions: SubmissionsDep):
    """Cancel a job that has not ended (409 if it has); workers skip its remaining rows."""
    return job_out(table, submissions.cancel(job_id))


@router.post(
    "/jobs/{job_id}/resume", status_code=202, response_model=JobOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def resume(job_id: str, table: TableDep, submissions: SubmissionsDep):
    """Resume a failed or cancelled job: re-plan it, re-run its rows that are not done, or
    only its reducer when every row is done."""
    return job_out(table, submissions.resume(job_id))


@router.post(
    "/jobs/{job_id}/rerun", status_code=202, response_model=JobOut,
    responses={**NOT_FOUND, **INVALID},
)
def rerun(job_id: str, request: Request, response: Response, table: TableDep,
          submissions: SubmissionsDep, body: RerunRequest | None = None):
    """Submit a new job on this job's source with its labels (plus ``rerun_of``), webhook,
    pixel size, precision, significant bits and scene, with ``model`` / ``model_version``
    (default: this job's model at its newest version), e.g. once a better model is
    registered, and a ``pixel_size_um`` / ``significant_bits`` / ``scene`` given replacing
    this job's. Any earlier job may be
    rerun, a deleted one included; 422 when its source is gone or the model is unknown."""
    body = body or RerunRequest()
    job = submissions.rerun(job_id, model=body.model, model_version=body.model_version,
                            confine_files=True, pixel_size_um=body.pixel_size_um,
                            significant_bits=body.significant_bits, scene=body.scene)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_out(table, job)


@router.delete("/jobs/{job_id}", response_model=JobDeleted, responses={**NOT_FOUND, **CONFLICT})
def delete(job_id: str, table: TableDep, submissions: SubmissionsDep):
    """Delete a job that has ended or was interrupted (409 while it runs: cancel it first, or
    while rows of it are still on workers): every object stored under ``jobs/{id}/``
    (outputs, row checkpoints, the converted source) is removed; the job stays listed as
    ``deleted`` only when asked for (``GET /v1/jobs?status=deleted``). The source is kept
    (an upload: ``DELETE /v1/uploads/{id}``). Deleting a deleted job removes anything left."""
    deletion = submissions.delete(job_id)
    return JobDeleted(**dict(job_out(table, deletion.job)), objects_removed=deletion.objects,
                      bytes_removed=deletion.bytes)


def _succeeded(table: JobTable, job_id: str) -> Job:
    job = table.jobs.get(job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise HTTPException(
            409, f"job {job_id} is {job.status}; results exist once it has succeeded"
        )
    return job


@router.get("/jobs/{job_id}/results", response_model=ResultsOut,
            responses={**NOT_FOUND, **CONFLICT})
def results(job_id: str, request: Request, table: TableDep, blobs: BlobsDep):
    """Phase fractions, the low-confidence share per class (jobs with a confidence layer) and
    download URLs of a succeeded job (presigned for an hour on S3)."""
    _succeeded(table, job_id)
    doc = json.loads(blobs.get_bytes(output_key(job_id, FRACTIONS_JSON)))
    confidence = None
    if blobs.exists(output_key(job_id, CONFIDENCE_JSON)):
        confidence = json.loads(blobs.get_bytes(output_key(job_id, CONFIDENCE_JSON)))
    files = {}
    for name in (*OUTPUT_FILES, *OPTIONAL_OUTPUTS):
        key = output_key(job_id, name)
        if blobs.exists(key):
            files[name] = blobs.signed_url(key, URL_EXPIRES_S) or str(
                request.url_for("get_job_file", job_id=job_id, name=name)
            )
    return ResultsOut(fractions=doc, files=files, confidence=confidence)


@router.get(
    "/jobs/{job_id}/microstructure", response_model=dict[str, Any],
    responses={200: {"description": "The job's microstructure.json document (docs/microstructure.md)."},
               404: {"model": ErrorOut,
                     "description": "No job has this id, or the job has no microstructure yet."}},
)
def microstructure(job_id: str, table: TableDep, blobs: BlobsDep):
    """The microstructure of a succeeded job (``microstructure.json``): pixel size, pellets
    (area, equivalent diameter, phase fractions, open and closed porosity, radial profiles),
    size distributions per class and boundary lengths per pair of classes. 404 until the
    job has one (before it succeeded, or a job reduced before microstructure existed)."""
    job = table.jobs.get(job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise HTTPException(
            404, f"job {job_id} is {job.status}; its microstructure exists once it has succeeded"
        )
    key = output_key(job_id, MICROSTRUCTURE_JSON)
    if not blobs.exists(key):
        raise HTTPException(
            404, f"job {job_id} has no {MICROSTRUCTURE_JSON}: it was reduced before pelletseg "
            "computed microstructure; submit the image again to get one"
        )
    return json.loads(blobs.get_bytes(key))


@router.get(
    "/jobs/{job_id}/results.csv", response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **NOT_FOUND, **CONFLICT},
)
def results_csv(job_id: str, table: TableDep, blobs: BlobsDep):
    """Phase fractions of a succeeded job as CSV (index,name,pixels,percent,percent_of_pellet)."""
    _succeeded(table, job_id)
    data = blobs.get_bytes(output_key(job_id, FRACTIONS_CSV))
    return Response(
        data, media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-fractions.csv"'},
    )


@router.get(
    "/jobs/{job_id}/files/{name}", name="get_job_file", response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **NOT_FOUND, **CONFLICT},
)
def job_file(job_id: str, name: str, table: TableDep, blobs: BlobsDep):
    """One output file of a succeeded job; ``name`` is one of labels.tif, overlay.tif,
    preview.png, fractions.json, fractions.csv, microstructure.json, pellets.csv,
    size_distributions.csv, boundaries.csv, radial_profiles.csv, radial_profiles.png,
    confidence.tif, confidence.json (the last two for jobs with a confidence layer)."""
    if name not in OUTPUT_FILES and name not in OPTIONAL_OUTPUTS:
        raise HTTPException(
            404, f"{name!r} is not an output file; outputs are "
                 f"{', '.join((*OUTPUT_FILES, *OPTIONAL_OUTPUTS))}"
        )
    _succeeded(table, job_id)
    key = output_key(job_id, name)
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".tif"):
        media = "image/tiff"
    if blobs.is_local:
        if not blobs.exists(key):
            raise NotFoundError(f"output {name} of job {job_id} does not exist")
        return FileResponse(blobs.path(key), media_type=media, filename=f"{job_id}-{name}")
    handle = blobs.open_read(key)

    def chunks():
        with handle:
            while block := handle.read(1 << 20):
                yield block

    return StreamingResponse(
        chunks(), media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{job_id}-{name}"'},
    )
