"""``/v1/batches``: many pellets in one request, one job each, one batch id."""

from __future__ import annotations

import uuid
from collections import Counter

from fastapi import APIRouter, Request, Response

from api.deps import BlobsDep, SubmissionsDep, TableDep
from api.routes.jobs import CONFLICT, INVALID, job_out, spec_of
from api.schemas import (
    BatchCancelled,
    BatchCreate,
    BatchDeleted,
    BatchOut,
    BatchResumed,
    ErrorOut,
    RerunRequest,
)
from storage.errors import StorageError
from storage.jobtable import JobTable
from submission import SubmissionError
from submission.reports import batch_jobs, batch_table

router = APIRouter(tags=["batches"])


def batch_id_for(idempotency_key: str | None) -> str:
    """A new random batch id, or with an idempotency key the same UUID-5 every time."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pelletseg-batch:{idempotency_key}"))


def batch_out(table: JobTable, batch_id: str) -> BatchOut:
    """A batch's jobs (newest first) and their counts by status.

    Raises:
        NotFoundError: no job has this batch id.
    """
    jobs = batch_jobs(table, batch_id)[::-1]  # newest first
    return BatchOut(
        id=batch_id, jobs_total=len(jobs),
        status_counts=dict(Counter(str(j.status) for j in jobs)),
        jobs=[job_out(table, j) for j in jobs],
    )


@router.post("/batches", status_code=202, response_model=BatchOut,
             responses={**INVALID, **CONFLICT})
def create_batch(body: BatchCreate, request: Request, response: Response, table: TableDep,
                 submissions: SubmissionsDep):
    """Submit several jobs that share one batch id (``GET /v1/jobs?batch=ID`` lists them).

    Every job is checked before any is created: one invalid job (named by its index) fails
    the request and creates nothing. With an ``idempotency_key``, a retry returns the same
    batch and jobs instead of duplicates (do retry after a 503: jobs created before the
    failure are kept).
    """
    specs = []
    for i, item in enumerate(body.jobs):
        try:
            specs.append(spec_of(submissions, item, defaults=body))
        except (SubmissionError, StorageError) as e:
            raise type(e)(f"jobs[{i}]: {e}") from e
    batch_id = batch_id_for(body.idempotency_key)
    for i, (item, spec) in enumerate(zip(body.jobs, specs, strict=True)):
        key = item.idempotency_key
        if key is None and body.idempotency_key is not None:
            key = f"{body.idempotency_key}#{i}"
        submissions.submit(spec, idempotency_key=key, batch_id=batch_id)
    response.headers["Location"] = str(request.url_for("get_batch", batch_id=batch_id))
    return batch_out(table, batch_id)


@router.get("/batches/{batch_id}", response_model=BatchOut,
            responses={404: {"model": ErrorOut, "description": "No job has this batch id."}})
def get_batch(batch_id: str, table: TableDep):
    """A batch's jobs and how many are in each status."""
    return batch_out(table, batch_id)


@router.post(
    "/batches/{batch_id}/resume", status_code=202, response_model=BatchResumed,
    responses={404: {"model": ErrorOut, "description": "No job has this batch id."},
               409: {"model": ErrorOut, "description": "No job of the batch is failed or "
                     "interrupted."}},
)
def resume_batch(batch_id: str, table: TableDep, submissions: SubmissionsDep):
    """Resume every failed or interrupted job of a batch (each as ``POST
    /v1/jobs/{id}/resume`` does: only what is not done is redone); succeeded, running and
    cancelled jobs are left as they are (resume a cancelled one on its own)."""
    resumed = submissions.resume_batch(batch_id)
    return BatchResumed(**dict(batch_out(table, batch_id)), resumed=[j.id for j in resumed])


@router.post(
    "/batches/{batch_id}/cancel", response_model=BatchCancelled,
    responses={404: {"model": ErrorOut, "description": "No job has this batch id."},
               409: {"model": ErrorOut, "description": "Every job of the batch has ended."}},
)
def cancel_batch(batch_id: str, table: TableDep, submissions: SubmissionsDep):
    """Cancel every job of a batch that has not ended (each as ``POST /v1/jobs/{id}/cancel``
    does: workers skip its remaining rows, its done rows are kept, its webhook fires)."""
    cancelled = submissions.cancel_batch(batch_id)
    return BatchCancelled(**dict(batch_out(table, batch_id)),
                          cancelled=[j.id for j in cancelled])


@router.post(
    "/batches/{batch_id}/rerun", status_code=202, response_model=BatchOut,
    responses={404: {"model": ErrorOut, "description": "No job has this batch id."}, **INVALID},
)
def rerun_batch(batch_id: str, request: Request, response: Response, table: TableDep,
                submissions: SubmissionsDep, body: RerunRequest | None = None):
    """Rerun every job of a batch (each as ``POST /v1/jobs/{id}/rerun``) as one new batch,
    answered here; every source and the model are checked before any job is created."""
    body = body or RerunRequest()
    if body.scene is not None:
        raise SubmissionError("a batch rerun cannot give one scene to every job: rerun the "
                              "job whose scene to change (POST /v1/jobs/{id}/rerun)")
    jobs = submissions.rerun_batch(batch_id, model=body.model, model_version=body.model_version,
                                   confine_files=True, pixel_size_um=body.pixel_size_um,
                                   significant_bits=body.significant_bits)
    new_batch = jobs[0].batch_id
    response.headers["Location"] = str(request.url_for("get_batch", batch_id=new_batch))
    return batch_out(table, new_batch)


@router.delete(
    "/batches/{batch_id}", response_model=BatchDeleted,
    responses={404: {"model": ErrorOut, "description": "No job has this batch id."},
               409: {"model": ErrorOut, "description": "No job of the batch has ended or "
                     "was interrupted."}},
)
def delete_batch(batch_id: str, table: TableDep, submissions: SubmissionsDep):
    """Delete every job of a batch that has ended or was interrupted (each as ``DELETE
    /v1/jobs/{id}`` does); jobs still running are left (cancel the batch first). The batch
    stays readable, its deleted jobs listed as ``deleted``."""
    deleted = submissions.delete_batch(batch_id)
    return BatchDeleted(**dict(batch_out(table, batch_id)), deleted=[d.job.id for d in deleted],
                        objects_removed=sum(d.objects for d in deleted),
                        bytes_removed=sum(d.bytes for d in deleted))


@router.get(
    "/batches/{batch_id}/results.csv", response_class=Response,
    responses={200: {"content": {"text/csv": {}}},
               404: {"model": ErrorOut, "description": "No job has this batch id."}},
)
def get_batch_results_csv(batch_id: str, table: TableDep, blobs: BlobsDep):
    """The batch's sections side by side as CSV, one line per job in submission order: status,
    pixel size, pellet count and area, open and closed porosity and oxidised share pooled over
    the section's pellets, each class's % of image and % of pellets, and the job's labels
    (docs/api.md). Jobs not succeeded yet have their status and empty figures."""
    return Response(
        batch_table(table, blobs, batch_id), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}-results.csv"'},
    )
