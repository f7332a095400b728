"""Job and row state machines (see ARCHITECTURE.md, "State machines").

The tables here are the single source of truth for allowed transitions. ``storage.jobtable.table``
applies them with conditional UPDATEs (``UPDATE ... WHERE status IN (:allowed_from)``), so a
duplicate delivery or a racing worker finds zero rows updated instead of double counting.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["JOB_DELETABLE", "JOB_TERMINAL", "JOB_TRANSITIONS", "ROW_TRANSITIONS", "JobStatus",
           "RowStatus", "job_sources", "row_sources"]


class JobStatus(StrEnum):
    """Status of a job."""

    QUEUED = "queued"
    PLANNING = "planning"
    RUNNING = "running"
    REDUCING = "reducing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Stopped by the user (Ctrl-C on ``pelletseg run``) with its done rows kept; nothing moves
    #: it until ``pelletseg resume`` (or cancel).
    INTERRUPTED = "interrupted"
    #: Deleted by the user: every object stored under ``jobs/{id}/`` (outputs, row
    #: checkpoints, the converted source) is removed; the row stays, as a record that the
    #: job existed, and is listed only when asked for (``status=deleted``). Nothing leaves it.
    DELETED = "deleted"


class RowStatus(StrEnum):
    """Status of one row (``rows_per_task`` tile rows: the unit of work and checkpoint)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


JOB_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                          JobStatus.DELETED})
#: Statuses a job may be deleted from: ended, or interrupted (nothing runs it).
JOB_DELETABLE = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                           JobStatus.INTERRUPTED})

#: target status -> statuses a job may move to it from.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PLANNING: frozenset({JobStatus.QUEUED}),
    JobStatus.RUNNING: frozenset({JobStatus.PLANNING, JobStatus.FAILED, JobStatus.CANCELLED,
                                  JobStatus.INTERRUPTED}),
    JobStatus.REDUCING: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED,
                                   JobStatus.INTERRUPTED}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.REDUCING}),
    JobStatus.FAILED: frozenset(
        {JobStatus.QUEUED, JobStatus.PLANNING, JobStatus.RUNNING, JobStatus.REDUCING}
    ),
    JobStatus.CANCELLED: frozenset(
        {JobStatus.QUEUED, JobStatus.PLANNING, JobStatus.RUNNING, JobStatus.REDUCING,
         JobStatus.INTERRUPTED}
    ),
    JobStatus.INTERRUPTED: frozenset(
        {JobStatus.QUEUED, JobStatus.PLANNING, JobStatus.RUNNING, JobStatus.REDUCING}
    ),
    JobStatus.QUEUED: frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}),
    JobStatus.DELETED: JOB_DELETABLE,
}

#: target status -> statuses a row may move to it from.
ROW_TRANSITIONS: dict[RowStatus, frozenset[RowStatus]] = {
    # pending -> running is a claim; running -> running is taking over an expired lease.
    RowStatus.RUNNING: frozenset({RowStatus.PENDING, RowStatus.RUNNING}),
    RowStatus.DONE: frozenset({RowStatus.RUNNING}),
    RowStatus.PENDING: frozenset({RowStatus.RUNNING, RowStatus.FAILED}),
    RowStatus.FAILED: frozenset({RowStatus.RUNNING}),
}


def job_sources(target: JobStatus) -> frozenset[JobStatus]:
    """Statuses from which a job may move to ``target``.

    Raises:
        KeyError: ``target`` is not reachable by any transition.
    """
    return JOB_TRANSITIONS[target]


def row_sources(target: RowStatus) -> frozenset[RowStatus]:
    """Statuses from which a row may move to ``target``.

    Raises:
        KeyError: ``target`` is not reachable by any transition.
    """
    return ROW_TRANSITIONS[target]
