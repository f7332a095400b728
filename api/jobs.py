"""Job submission and control: create the job row and enqueue ``plan_job``; cancel; resume.
Used by the CLI and by the HTTP routes; imports neither torch nor ``worker`` (tasks are sent
by name)."""

from __future__ import annotations

import uuid
from pathlib import Path

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from pydantic import ValidationError

from storage import webhooks
from storage.errors import StorageError, TransitionError, WebhookUrlError
from storage.jobs import JobStore, job_store
from storage.models import Job
from storage.queues import NOTIFY_TASK, PLAN_TASK, REDUCE_TASK, ROW_TASK, make_celery, send
from storage.settings import Settings
from storage.sources import is_bare_path, source_scheme
from storage.spec import JobSpec
from storage.states import JOB_TERMINAL, JobStatus


class SubmissionError(ValueError):
    """A job request is invalid (e.g. its source URL scheme is not allowed)."""


def normalise_source(source: str, settings: Settings) -> str:
    """A local path becomes an absolute ``file://`` URL; URLs are checked against
    ``settings.allowed_source_schemes`` (local paths count as scheme ``file``).

    Raises:
        SubmissionError: the scheme is not allowed, or a local path does not exist.
    """
    allowed = settings.allowed_source_schemes
    if is_bare_path(source):
        if "file" not in allowed:
            raise SubmissionError(
                f"{source}: local file paths are not allowed (allowed schemes: "
                f"{', '.join(allowed)})"
            )
        try:
            path = Path(source).expanduser().resolve()
            found = path.is_file()
        except (RuntimeError, ValueError, OSError) as e:  # '~nobody', NUL bytes, loops
            raise SubmissionError(f"{source!r} is not a usable file path: {e}") from e
        if not found:
            raise SubmissionError(f"{source}: no such file")
        return path.as_uri()
    scheme = source_scheme(source)
    if scheme not in allowed:
        raise SubmissionError(
            f"{source}: scheme {scheme!r} is not allowed (allowed: {', '.join(allowed)})"
        )
    return source


def check_webhook_url(url: str, settings: Settings) -> str:
    """Check a webhook URL against server-side request forgery (see
    :func:`storage.webhooks.check_webhook_url`; private addresses pass only with
    ``settings.allow_private_webhooks``).

    Returns:
        ``url`` unchanged.

    Raises:
        SubmissionError: wrong scheme, credentials, no host, unresolvable host or a non-public
            address.
    """
    try:
        return webhooks.check_webhook_url(url, settings.allow_private_webhooks)
    except WebhookUrlError as e:
        raise SubmissionError(str(e)) from e


def build_spec(settings: Settings, source: str, model: str | None = None, **options) -> JobSpec:
    """A :class:`JobSpec` from a source and options, defaults taken from ``settings``.

    Options left None take the defaults; a ``webhook_url`` is checked with
    :func:`check_webhook_url`, and needs ``settings.webhook_secret`` (webhooks are signed).

    Raises:
        SubmissionError: invalid source, webhook URL or options, or a webhook without a
            signing secret configured.
    """
    values = dict(
        source_url=normalise_source(source, settings),
        model=model or settings.default_model,
        tile_size=settings.tile_size,
        halo=settings.halo,
        rows_per_task=settings.rows_per_task,
    )
    values.update({k: v for k, v in options.items() if v is not None})
    if values.get("webhook_url") is not None:
        if settings.webhook_secret is None:
            raise SubmissionError(
                "webhook_url needs a signing secret on the server: set PELLETSEG_WEBHOOK_SECRET "
                "on the API and the workers (webhooks are never sent unsigned)"
            )
        check_webhook_url(values["webhook_url"], settings)
    try:
        return JobSpec(**values)
    except ValidationError as e:
        raise SubmissionError("; ".join(
            (".".join(map(str, err["loc"])) + ": " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ") for err in e.errors())) from e
    except ValueError as e:
        raise SubmissionError(str(e)) from e


def submit_job(
    settings: Settings,
    spec: JobSpec,
    *,
    idempotency_key: str | None = None,
    app: Celery | None = None,
    batch_id: str | None = None,
) -> Job:
    """Create a ``queued`` job (in batch ``batch_id`` if given) and enqueue its planning task.

    With an ``idempotency_key`` already used, returns that job and enqueues nothing (also
    when two requests with the same key race: only the one that inserted the job enqueues).

    Raises:
        StorageError: the job table or the broker is unreachable (a job whose planning task
            could not be sent is marked failed, to be resumed once the broker is back).
    """
    jobs = job_store(settings)
    if idempotency_key is not None:
        existing = jobs.find_by_idempotency_key(idempotency_key)
        if existing is not None:
            return existing
    new_id = str(uuid.uuid4())
    job = jobs.create_job(spec, job_id=new_id, idempotency_key=idempotency_key,
                          batch_id=batch_id)
    if job.id == new_id:
        _send_or_fail(jobs, app or make_celery(settings), job.id, [(PLAN_TASK, job.id)])
    return job


def _send_or_fail(jobs: JobStore, app: Celery, job_id: str, tasks: list[tuple]) -> None:
    """Send ``(task, *args)`` messages; if the broker fails, fail the job (so that it can be
    resumed later) and raise :class:`StorageError`."""
    try:
        for task, *args in tasks:
            send(app, task, *args)
    except (BrokerError, OSError) as e:
        jobs.transition_job(job_id, JobStatus.FAILED, error=f"could not enqueue work: {e}")
        raise StorageError(
            f"the broker is unreachable ({e}); job {job_id} was marked failed: resume it "
            "when the broker is back"
        ) from e


def cancel_job(settings: Settings, job_id: str, app: Celery | None = None) -> Job:
    """Move a job that has not ended to ``cancelled``; workers skip its remaining rows. Its
    webhook, if any, is armed in the same UPDATE and its notify task sent (best effort: if the
    broker is down, the reconciler sends it later).

    Returns:
        The job after the change.

    Raises:
        NotFoundError: no such job.
        TransitionError: the job has already ended (succeeded, failed or cancelled).
        StorageError: the job table is unreachable.
    """
    jobs = job_store(settings)
    for _ in range(5):  # a worker may move the job between our read and our UPDATE
        job = jobs.get_job(job_id)
        if job.status in JOB_TERMINAL:
            raise TransitionError(f"job {job_id} is {job.status}; only a job that has not "
                                  "ended can be cancelled")
        if jobs.transition_job(job_id, JobStatus.CANCELLED):
            if jobs.webhook_pending(job_id):
                try:
                    send(app or make_celery(settings), NOTIFY_TASK, job_id)
                except (BrokerError, OSError):
                    pass  # the job is cancelled; the reconciler's sweep sends the webhook
            return jobs.get_job(job_id)
    raise TransitionError(f"job {job_id} kept changing status; try again")


def resume_job(settings: Settings, job_id: str, app: Celery | None = None) -> Job:
    """Resume a ``failed`` or ``cancelled`` job where it stopped.

    - never planned (no rows, or planning did not finish): job -> ``queued``, enqueue
      ``plan_job``;
    - every row done: job -> ``reducing``, enqueue only ``reduce_job``;
    - otherwise: job -> ``running``, every row that is not done -> ``pending`` (attempts
      restart), enqueue ``segment_row`` for each of them.

    Returns:
        The job after the change.

    Raises:
        NotFoundError: no such job.
        TransitionError: the job is not failed or cancelled (or changed concurrently).
        StorageError: the job table or the broker is unreachable (the job is failed again).
    """
    jobs = job_store(settings)
    job = jobs.get_job(job_id)
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise TransitionError(
            f"job {job_id} is {job.status}; only failed or cancelled jobs can be resumed"
        )
    progress = jobs.progress(job_id)
    planned = progress.total > 0 and job.rows_total is not None
    if not planned:
        # Planning did not finish: plan again (rows it inserted are kept, reset to pending).
        target, tasks = JobStatus.QUEUED, [(PLAN_TASK, job_id)]
    elif progress.done == progress.total:
        target, tasks = JobStatus.REDUCING, [(REDUCE_TASK, job_id)]
    else:
        target, tasks = JobStatus.RUNNING, []
    extra = {"error": None, "finished_at": None}
    if not jobs.transition_job(job_id, target, **extra):
        raise TransitionError(f"job {job_id} changed status while resuming; try again")
    if target == JobStatus.RUNNING:
        tasks = [(ROW_TASK, job_id, index) for index in jobs.reset_rows_for_resume(job_id)]
    elif target == JobStatus.QUEUED and progress.total:
        jobs.reset_rows_for_resume(job_id)
    _send_or_fail(jobs, app or make_celery(settings), job_id, tasks)
    return jobs.get_job(job_id)
