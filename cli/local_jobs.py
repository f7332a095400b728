"""Job commands on the local (embedded, or ``PELLETSEG_*``-named) stack, without the HTTP API:
``pelletseg cancel JOB --home DIR`` (or ``--batch ID``)."""

from __future__ import annotations

from core.settings import Settings

__all__ = ["cancel_local"]


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
