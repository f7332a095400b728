"""Deleting a job or an upload, the one owner of what that does to the job table and the
store. A job moves to ``deleted`` in one conditional UPDATE (``core.states.JOB_DELETABLE``),
then every object under ``jobs/{id}/`` is removed; neither its source nor its row is touched.
An upload (``uploads/{id}/``: parts, file, manifest) is removed unless a job that reads it
still needs it. Used by the submission service (``DELETE /v1/jobs/{id}``, ``DELETE
/v1/uploads/{id}``, ``pelletseg delete``, the dashboard) and by the reconciler's retention
sweep (``PELLETSEG_RETENTION_DAYS``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from core.states import JOB_DELETABLE, JOB_TERMINAL, JobStatus
from storage.blobs import BlobStore, UploadManifest, UploadStore, job_prefix
from storage.errors import TransitionError
from storage.jobtable import Job, JobTable

__all__ = [
    "UPLOAD_IN_USE",
    "Deletion",
    "UploadDeletion",
    "delete_job",
    "delete_upload",
    "upload_readers",
    "work_in_flight",
]

#: Statuses of a job that keep its upload from ``DELETE /v1/uploads/{id}``: every status but
#: the ended ones (an ``interrupted`` job's resume re-reads its source).
UPLOAD_IN_USE = frozenset(JobStatus) - JOB_TERMINAL


@dataclass(frozen=True)
class Deletion:
    """A deleted job: the job afterwards (``deleted``) and what was removed from the store
    (objects, bytes)."""

    job: Job
    objects: int
    bytes: int


def work_in_flight(table: JobTable, job: Job) -> int:
    """How many of a job's rows are ``running`` under a lease that has not expired, plus one
    for a streaming stitcher whose lease has not: work that may still store objects under
    ``jobs/{id}/``."""
    _, stitching = table.stitch.state(job.id)
    return int(stitching) + len(table.rows.leased(job.id))


def delete_job(table: JobTable, blobs: BlobStore, job_id: str, *,
               lease_seconds: float) -> Deletion:
    """Delete a job that has ended or was interrupted: move it to ``deleted`` (a racing resume
    either wins or finds it deleted; its webhook is armed with event ``deleted`` in the same
    UPDATE), then remove every object stored under ``jobs/{id}/`` (outputs, row checkpoints
    and partials, the converted source). The row and its row records stay, as the record.
    A ``deleted`` job has its prefix removed again (whatever a late writer or a failed
    removal left).

    Args:
        lease_seconds: ``PELLETSEG_LEASE_SECONDS``, named in the refusal below.

    Returns:
        The job after the change, and the objects and bytes removed.

    Raises:
        NotFoundError: no such job.
        TransitionError: the job has not ended (cancel it first), or rows of it (or its
            streaming stitcher) are still on workers under a live lease: a row of a job
            cancelled or failed meanwhile may still store its checkpoint; try again once
            their leases end.
        StorageError: the job table or the store failed (what was removed stays removed;
            deleting again removes the rest).
    """
    job = table.jobs.get(job_id)
    if job.status != JobStatus.DELETED:
        if job.status not in JOB_DELETABLE:
            raise TransitionError(
                f"job {job_id} is {job.status}; only a job that has ended (or was "
                f"interrupted) can be deleted: cancel it first")
        in_flight = work_in_flight(table, job)
        if in_flight:
            raise TransitionError(
                f"job {job_id} still has {in_flight} row(s) or its stitcher on workers "
                f"(leases of up to {lease_seconds:g} s); delete it once they end")
        if not table.jobs.transition(job_id, JobStatus.DELETED, expected=JobStatus(job.status)):
            raise TransitionError(f"job {job_id} changed status while deleting; try again")
    objects, size = blobs.delete_prefix(job_prefix(job_id))
    return Deletion(table.jobs.get(job_id), objects, size)


@dataclass(frozen=True)
class UploadDeletion:
    """A deleted upload: its id and what was removed from the store (objects, bytes; on S3
    the parts of an unfinished multipart upload are not objects and not counted)."""

    upload_id: str
    objects: int
    bytes: int


def upload_readers(table: JobTable, uploads: UploadStore,
                   manifest: UploadManifest) -> list[tuple[str, JobStatus]]:
    """``(id, status)`` of the jobs, other than deleted ones, that read the upload's file
    (none for an unfinished upload: no job can name it)."""
    if manifest.completed_at is None:
        return []
    return table.jobs.reading(uploads.source_url(manifest))


def delete_upload(table: JobTable, uploads: UploadStore, upload_id: str, *,
                  keep_for: Collection[JobStatus] = UPLOAD_IN_USE) -> UploadDeletion:
    """Delete an upload, finished or not: its parts (an S3 multipart upload is aborted), its
    file and its manifest, unless a job that reads it is in a status of ``keep_for``. Jobs
    that ended keep their outputs; a later resume or rerun of one fails naming the missing
    source. The upload is marked (:meth:`UploadStore.mark_deleting`) before its readers are
    looked for, and a job's submission looks for the mark after its row exists
    (:meth:`submission.SubmissionService.submit`): so a job submitted meanwhile is either
    seen here (the deletion is refused and the mark removed) or refused itself.

    Args:
        keep_for: Statuses of reading jobs that keep the upload: by default those that have
            not ended (:data:`UPLOAD_IN_USE`); the retention sweep passes every status (an
            upload stays while any job that read it is kept).

    Returns:
        The upload's id and the objects and bytes removed.

    Raises:
        NotFoundError: no such upload.
        TransitionError: a job in a status of ``keep_for`` reads it (named in the message).
        StorageError: the store failed (what was removed stays removed; deleting again
            removes the rest).
    """
    manifest = uploads.get(upload_id)
    objects, size = uploads.blobs.usage(f"uploads/{upload_id}")  # without the mark
    uploads.mark_deleting(upload_id)
    try:
        holding = [(job_id, status) for job_id, status
                   in upload_readers(table, uploads, manifest) if status in keep_for]
        if holding:
            shown = ", ".join(f"{job_id} ({status})" for job_id, status in holding[:5])
            more = f" and {len(holding) - 5} more" if len(holding) > 5 else ""
            raise TransitionError(
                f"upload {upload_id} is the source of job(s) {shown}{more}: a job reads its "
                f"source while it runs and again when it is resumed; wait until they end, or "
                f"cancel them, then delete the upload")
    except BaseException:  # refused, or the check failed: the upload stays usable
        uploads.unmark_deleting(upload_id)
        raise
    uploads.abort(manifest)
    return UploadDeletion(upload_id, objects, size)
