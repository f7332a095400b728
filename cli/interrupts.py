"""Ctrl-C on ``pelletseg run`` / ``demo`` / ``resume``: stop quickly and leave a resumable job.

The first SIGINT marks the job ``interrupted`` (its done rows kept; workers skip the rows of a
job that is not running, so they take no new rows), stops the local workers (SIGTERM, a
``GRACE_SECONDS`` grace, then SIGKILL) and prints the job id and the exact command that
continues it; the command exits 130. A second SIGINT exits at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.states import JOB_TERMINAL, JobStatus
from storage.errors import StorageError
from storage.jobtable.table import JobTable

__all__ = ["EXIT_INTERRUPTED", "GRACE_SECONDS", "batch_resume_hint", "interrupt_job",
           "resume_hint", "second_interrupt_exits"]

#: Exit code after Ctrl-C (128 + SIGINT), as shells expect.
EXIT_INTERRUPTED = 130
#: How long stopping workers get after SIGTERM before SIGKILL (s).
GRACE_SECONDS = 2.0


@contextmanager
def second_interrupt_exits() -> Iterator[None]:
    """While the block runs (the clean-up after a first Ctrl-C), a second SIGINT exits the
    process at once with code 130."""
    def now(*_):
        os._exit(EXIT_INTERRUPTED)

    previous = signal.signal(signal.SIGINT, now)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupt_job(table: JobTable, job_id: str) -> str:
    """Mark a job that has not ended ``interrupted``.

    Returns:
        The job's status afterwards (``interrupted``, or the status it ended in meanwhile).
    """
    try:
        if table.jobs.transition(job_id, JobStatus.INTERRUPTED):
            return JobStatus.INTERRUPTED.value
        return table.jobs.get(job_id).status
    except StorageError as e:  # the job table is away: say so; resume still works later
        return f"unknown ({e})"


def resume_hint(job_id: str, home: Path, status: str) -> str:
    """The lines printed after an interrupt: the job and the command that continues it."""
    if status in {s.value for s in JOB_TERMINAL}:
        return f"job {job_id} {status}"
    return (f"job {job_id} {status}: done rows are kept.\n"
            f"continue it with:  pelletseg resume {job_id} --home {home}\n"
            f"or drop it with:   pelletseg cancel {job_id} --home {home}")


def batch_resume_hint(batch_id: str, home: Path, statuses: dict[str, str]) -> str:
    """The lines printed after an interrupt of a batch's run: each job's status, then the
    commands that continue or drop every job of the batch that has not ended."""
    lines = [f"job {job_id} {status}" for job_id, status in statuses.items()]
    if any(status not in {s.value for s in JOB_TERMINAL} for status in statuses.values()):
        lines += ["done rows are kept.",
                  f"continue them with:  pelletseg resume --batch {batch_id} --home {home}",
                  f"or drop them with:   pelletseg cancel --batch {batch_id} --home {home}"]
    return "\n".join(lines)
