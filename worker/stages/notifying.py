"""Stage ``pelletseg.notify``: one delivery attempt of a job's end-of-job webhook.

Runs in its own task (``plan`` queue), never inside a stage: a slow or dead receiver delays
only its own notification, never a job. The outbox on the job row
(:mod:`storage.jobtable.webhook_outbox`) is the source of truth; this stage claims one
attempt, sends it (:mod:`webhooks`: body, signature, POST) and records delivered / retry
later / failed. :func:`kick` and :func:`sweep` send the task when it is due.
"""

from __future__ import annotations

import json

import structlog

from core.states import JobStatus
from queues.names import NOTIFY_TASK
from storage.blobs.layout import FRACTIONS_JSON, output_key
from storage.errors import StorageError
from storage.jobtable.webhook_outbox import WebhookAttempt
from webhooks import payload, post
from worker.context import WorkerContext

__all__ = ["deliver", "kick", "sweep"]

log = structlog.get_logger(__name__)


def _fractions(ctx: WorkerContext, attempt: WebhookAttempt) -> dict | None:
    """The job's ``fractions.json`` document, or None (logged) where it cannot be read."""
    try:
        return json.loads(ctx.blobs.get_bytes(output_key(attempt.job.id, FRACTIONS_JSON)))
    except (StorageError, ValueError) as e:
        log.warning("notify.no_fractions", job_id=attempt.job.id, error=str(e))
        return None


def deliver(ctx: WorkerContext, job_id: str) -> float | None:
    """Make one delivery attempt of a job's webhook if one is due; idempotent.

    Claims the attempt (another worker holding it, or nothing due, means nothing to do),
    POSTs the signed body, records the outcome on the job row.

    Returns:
        Seconds until the next attempt when this one failed and another is allowed, else None.

    Raises:
        StorageError: the job table is unreachable (the task is retried; the reconciler also
            re-sends due deliveries).
    """
    settings = ctx.settings
    lease = 2 * settings.webhook_timeout_seconds + 30
    attempt = ctx.table.webhooks.claim(job_id, lease_seconds=lease)
    if attempt is None:
        return None
    if settings.webhook_secret is None:
        error = ("no PELLETSEG_WEBHOOK_SECRET is set on this worker: webhooks are never sent "
                 "unsigned")
    else:
        fractions = _fractions(ctx, attempt) if attempt.event == JobStatus.SUCCEEDED else None
        batch = attempt.job.batch_id
        counts = ctx.table.jobs.batch_counts(batch) if batch is not None else None
        error = post(attempt, payload(attempt, fractions, counts),
                     settings.webhook_secret.get_secret_value(),
                     timeout_s=settings.webhook_timeout_seconds,
                     allow_private=settings.allow_private_webhooks)
    status, retry_in = ctx.table.webhooks.finish(
        attempt, error, max_attempts=settings.webhook_max_attempts,
        backoff_base_s=settings.webhook_backoff_seconds,
    )
    log.info("notify.attempt", job_id=job_id, attempt=attempt.attempt, outcome=status,
             error=error, retry_in=retry_in)
    return retry_in


def kick(ctx: WorkerContext, job_id: str) -> bool:
    """Send the notify task of ``job_id`` now if its webhook is armed and not yet attempted
    (called after a stage task, which may have ended the job).

    Returns:
        True if a task was sent.
    """
    if ctx.table.webhooks.pending(job_id):
        ctx.enqueue(NOTIFY_TASK, job_id)
        return True
    return False


def sweep(ctx: WorkerContext, limit: int = 500) -> list[str]:
    """Send the notify task of every job whose webhook delivery is due (retries whose message was lost
    or held back, deliveries whose worker died, jobs ended while the broker was down).

    Returns:
        The job ids sent.
    """
    due = ctx.table.webhooks.due(limit)
    for job_id in due:
        ctx.enqueue(NOTIFY_TASK, job_id)
    return due
