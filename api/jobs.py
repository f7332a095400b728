"""Job submission: create the job row and enqueue ``plan_job``. Used by the CLI today and by
the HTTP routes; imports neither torch nor ``worker``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from celery import Celery

from storage.db import cached_engine
from storage.jobs import JobStore
from storage.models import Job
from storage.queues import PLAN_TASK, make_celery, send
from storage.settings import Settings
from storage.spec import JobSpec


class SubmissionError(ValueError):
    """A job request is invalid (e.g. its source URL scheme is not allowed)."""


def normalise_source(source: str, settings: Settings) -> str:
    """A local path becomes an absolute ``file://`` URL; URLs are checked against
    ``settings.allowed_source_schemes``.

    Raises:
        SubmissionError: the scheme is not allowed, or a local path does not exist.
    """
    parsed = urlparse(source)
    if len(parsed.scheme) <= 1:  # a bare path (or a Windows drive letter)
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise SubmissionError(f"{source}: no such file")
        return path.as_uri()
    if parsed.scheme not in settings.allowed_source_schemes:
        raise SubmissionError(
            f"{source}: scheme {parsed.scheme!r} is not allowed (allowed: "
            f"{', '.join(settings.allowed_source_schemes)})"
        )
    return source


def build_spec(settings: Settings, source: str, model: str | None = None, **options) -> JobSpec:
    """A :class:`JobSpec` from a source and options, defaults taken from ``settings``.

    Raises:
        SubmissionError: invalid source or options.
    """
    values = dict(
        source_url=normalise_source(source, settings),
        model=model or settings.default_model,
        tile_size=settings.tile_size,
        halo=settings.halo,
        rows_per_task=settings.rows_per_task,
    )
    values.update({k: v for k, v in options.items() if v is not None})
    try:
        return JobSpec(**values)
    except ValueError as e:
        raise SubmissionError(str(e)) from e


def submit_job(
    settings: Settings,
    spec: JobSpec,
    *,
    idempotency_key: str | None = None,
    app: Celery | None = None,
) -> Job:
    """Create a ``queued`` job and enqueue its planning task.

    With an ``idempotency_key`` already used, returns that job and enqueues nothing.

    Raises:
        StorageError: the job table is unreachable.
    """
    jobs = JobStore(cached_engine(settings.resolved_database_url))
    if idempotency_key is not None:
        existing = jobs.find_by_idempotency_key(idempotency_key)
        if existing is not None:
            return existing
    job = jobs.create_job(spec, idempotency_key=idempotency_key)
    send(app or make_celery(settings), PLAN_TASK, job.id)
    return job
