"""Deleting a job, the one owner of what it does to the job table and the store: the job moves
to ``deleted`` in one conditional UPDATE (``core.states.JOB_DELETABLE``), then every object
under ``jobs/{id}/`` is removed. Used by the submission service (``DELETE /v1/jobs/{id}``,
``pelletseg delete``, the dashboard) and by the reconciler's retention sweep
(``PELLETSEG_RETENTION_DAYS``); neither the source nor the job row is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.states import JOB_DELETABLE, JobStatus
from storage.blobs import BlobStore, job_prefix
from storage.errors import TransitionError
from storage.jobtable import Job, JobTable

__all__ = ["Deletion", "delete_job", "work_in_flight"]


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
