"""End-of-job webhooks: build the JSON body, sign it, POST it, record the outcome.

Runs in the ``pelletseg.notify`` task (``plan`` queue), never inside a stage: a slow or dead
receiver delays only its own notification, never a job. The outbox on the job row
(:mod:`storage.webhooks`) is the source of truth; this module claims one attempt, sends it
and records delivered / retry later / failed.

Request: ``POST <webhook_url>`` with headers ``Content-Type: application/json``,
``X-Pelletseg-Event: job.<status>``, ``X-Pelletseg-Delivery: <uuid, the same on every retry>``
and ``X-Pelletseg-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
Any 2xx answer is a delivery; anything else (other status, timeout, refused connection,
redirect) is a failed attempt, retried with exponential backoff.
"""

from __future__ import annotations

import json

import httpx
import structlog

from storage.errors import StorageError, WebhookUrlError
from storage.layout import FRACTIONS_JSON, output_key
from storage.queues import NOTIFY_TASK
from storage.states import JobStatus
from storage.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    check_webhook_url,
    sign,
)
from worker.context import WorkerContext

log = structlog.get_logger(__name__)

USER_AGENT = "pelletseg-webhook/1"


def payload(ctx: WorkerContext, delivery: Delivery) -> dict:
    """The JSON document POSTed for ``delivery``: ``event``, ``delivery_id`` and the ``job``
    (id, status notified, batch, source, labels, model, image size (px), rows, timings, error);
    for a succeeded job also its ``fractions`` (the ``fractions.json`` document: pixels and %
    per phase)."""
    job = delivery.job
    spec = job.spec or {}
    body: dict = {
        "event": f"job.{delivery.event}",
        "delivery_id": delivery.id,
        "job": {
            "id": job.id,
            "status": delivery.event,
            "batch_id": job.batch_id,
            "source_url": job.source_url,
            "labels": spec.get("labels") or {},
            "model": {"name": job.model_name, "version": job.model_version,
                      "sha256": job.model_sha256},
            "width": job.width,
            "height": job.height,
            "rows_total": job.rows_total,
            "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at),
            "finished_at": _iso(delivery.event_at),
            "error": job.error if delivery.event == JobStatus.FAILED else None,
        },
    }
    if delivery.event == JobStatus.SUCCEEDED:
        try:
            body["fractions"] = json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
        except (StorageError, ValueError) as e:
            log.warning("notify.no_fractions", job_id=job.id, error=str(e))
            body["fractions"] = None
    return body


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def post(ctx: WorkerContext, delivery: Delivery, secret: str) -> str | None:
    """POST one signed notification.

    Returns:
        None on a 2xx answer, else the reason of the failure (one line).
    """
    url = delivery.job.webhook_url
    try:
        check_webhook_url(url, ctx.settings.allow_private_webhooks)
    except WebhookUrlError as e:
        return str(e)
    body = json.dumps(payload(ctx, delivery), separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: f"job.{delivery.event}",
        DELIVERY_HEADER: delivery.id,
        SIGNATURE_HEADER: sign(secret, body),
    }
    try:
        with httpx.Client(timeout=ctx.settings.webhook_timeout_seconds,
                          follow_redirects=False, trust_env=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}: {response.text[:200]}"


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
    delivery = ctx.jobs.claim_webhook(job_id, lease_seconds=lease)
    if delivery is None:
        return None
    if settings.webhook_secret is None:
        error = ("no PELLETSEG_WEBHOOK_SECRET is set on this worker: webhooks are never sent "
                 "unsigned")
    else:
        error = post(ctx, delivery, settings.webhook_secret.get_secret_value())
    status, retry_in = ctx.jobs.finish_webhook(
        delivery, error, max_attempts=settings.webhook_max_attempts,
        backoff_base_s=settings.webhook_backoff_seconds,
    )
    log.info("notify.attempt", job_id=job_id, attempt=delivery.attempt, outcome=status,
             error=error, retry_in=retry_in)
    return retry_in


def kick(ctx: WorkerContext, job_id: str) -> bool:
    """Send the notify task of ``job_id`` now if its webhook is armed and not yet attempted
    (called after a stage task, which may have ended the job).

    Returns:
        True if a task was sent.
    """
    if ctx.jobs.webhook_pending(job_id):
        ctx.enqueue(NOTIFY_TASK, job_id)
        return True
    return False


def sweep(ctx: WorkerContext, limit: int = 500) -> list[str]:
    """Send the notify task of every job whose delivery is due (retries whose message was lost
    or held back, deliveries whose worker died, jobs ended while the broker was down).

    Returns:
        The job ids sent.
    """
    due = ctx.jobs.due_webhooks(limit)
    for job_id in due:
        ctx.enqueue(NOTIFY_TASK, job_id)
    return due
