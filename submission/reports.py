"""A batch's jobs and table of sections, read from the job table and the blob store: the one
reader behind ``GET /v1/batches/{id}/results.csv``, ``pelletseg run`` of several images and
a batch's resume."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from core.states import JobStatus
from microstructure import BatchEntry, batch_csv
from storage.blobs import FRACTIONS_JSON, MICROSTRUCTURE_JSON, BlobStore, output_key
from storage.errors import NotFoundError
from storage.jobtable import Job, JobTable

__all__ = ["MAX_BATCH", "batch_entry", "batch_jobs", "batch_table"]

#: Jobs in one batch at most: ``POST /v1/batches`` and ``pelletseg run`` accept no more, the
#: table reads no more.
MAX_BATCH = 500
#: Threads reading a batch's documents (two per job: on S3, two GETs).
READ_THREADS = 8


def batch_jobs(table: JobTable, batch_id: str) -> list[Job]:
    """A batch's jobs in submission order (creation time, then id), deleted ones included.

    Raises:
        NotFoundError: no job has this batch id.
    """
    jobs = table.jobs.list(limit=MAX_BATCH, batch_id=batch_id, with_deleted=True)
    if not jobs:
        raise NotFoundError(f"batch {batch_id} does not exist")
    return sorted(jobs, key=lambda j: (j.created_at, j.id))


def batch_entry(blobs: BlobStore, job: Job) -> BatchEntry:
    """A job as a line of its batch's table: its stored documents once it has succeeded."""
    docs = {}
    if job.status == JobStatus.SUCCEEDED:
        for name in (FRACTIONS_JSON, MICROSTRUCTURE_JSON):
            key = output_key(job.id, name)
            docs[name] = json.loads(blobs.get_bytes(key)) if blobs.exists(key) else None
    return BatchEntry(
        job_id=job.id, source=job.source_url, status=str(job.status),
        created_at=job.created_at.isoformat(), model=f"{job.model_name}:{job.model_version}",
        error=job.error, labels=(job.spec or {}).get("labels") or {},
        fractions=docs.get(FRACTIONS_JSON), microstructure=docs.get(MICROSTRUCTURE_JSON),
        scene=(job.spec or {}).get("scene"),
    )


def batch_table(table: JobTable, blobs: BlobStore, batch_id: str) -> str:
    """The batch's sections side by side as CSV text (:func:`microstructure.batch_csv`), one
    line per job in submission order (creation time, then id).

    Raises:
        NotFoundError: no job has this batch id.
        StorageError: the job table or the blob store is unreachable.
    """
    ordered = batch_jobs(table, batch_id)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return batch_csv(list(pool.map(lambda j: batch_entry(blobs, j), ordered)))
