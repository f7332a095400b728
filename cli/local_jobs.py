"""Job commands on the local (embedded, or ``PELLETSEG_*``-named) stack, without the HTTP API:
``pelletseg cancel JOB --home DIR``."""

from __future__ import annotations

from core.settings import Settings

__all__ = ["cancel_local"]


def cancel_local(settings: Settings, job_id: str) -> str:
    """Cancel a job that has not ended (``interrupted`` included) in the job table of
    ``settings``; its done rows are kept, so ``pelletseg resume`` can still continue it.

    Returns:
        One line for the user: ``job ID cancelled``.

    Raises:
        NotFoundError: no such job. TransitionError: the job has already ended.
        StorageError: the job table is unreachable.
    """
    from submission import SubmissionService
    from submission.stack import prepare

    prepare(settings)
    job = SubmissionService(settings).cancel(job_id)
    return f"job {job.id} {job.status}"
