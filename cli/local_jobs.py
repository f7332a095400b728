"""Job commands on the local (embedded, or ``PELLETSEG_*``-named) stack, without the HTTP API:
``pelletseg cancel JOB --home DIR`` and ``pelletseg delete JOB --home DIR`` (or ``--batch
ID``)."""

from __future__ import annotations

from core.settings import Settings

__all__ = ["cancel_local", "delete_local", "deleted_line"]


def cancel_local(settings: Settings, job_id: str | None, batch_id: str | None = None) -> str:
    """Cancel a job that has not ended (``interrupted`` included), or with ``batch_id`` every
    such job of the batch, in the job table of ``settings``; done rows are kept, so
    ``pelletseg resume`` can still continue them.

    Returns:
        What to print: ``job ID cancelled``, a line per job.

    Raises:
        NotFoundError: no such job or batch. TransitionError: the job (every job of the
            batch) has already ended. StorageError: the job table is unreachable.
    """
    from submission import SubmissionService
    from submission.stack import prepare

    prepare(settings)
    service = SubmissionService(settings)
    jobs = service.cancel_batch(batch_id) if batch_id is not None else [service.cancel(job_id)]
    return "\n".join(f"job {job.id} {job.status}" for job in jobs)


def deleted_line(job_id: str, objects: int, size: int) -> str:
    """``job ID deleted: 37 objects, 12.4 MB removed`` (MB = 10^6 bytes)."""
    return f"job {job_id} deleted: {objects} objects, {size / 1e6:.1f} MB removed"


def delete_local(settings: Settings, job_id: str | None, batch_id: str | None = None) -> str:
    """Delete a job that has ended or was interrupted (its outputs, row checkpoints and
    converted source), or with ``batch_id`` every such job of the batch, on the stack of
    ``settings`` (:meth:`submission.SubmissionService.delete`).

    Returns:
        What to print: :func:`deleted_line` per job.

    Raises:
        NotFoundError: no such job or batch. TransitionError: the job is still running (every
            job of the batch). StorageError: the job table or the store failed.
    """
    from submission import SubmissionService
    from submission.stack import prepare

    prepare(settings)
    service = SubmissionService(settings)
    done = service.delete_batch(batch_id) if batch_id is not None else [service.delete(job_id)]
    return "\n".join(deleted_line(d.job.id, d.objects, d.bytes) for d in done)
