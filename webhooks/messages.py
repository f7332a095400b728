"""The webhook on the wire: the JSON body of an end-of-job notification and its signed POST.

Request: ``POST <webhook_url>`` with headers ``Content-Type: application/json``,
``X-Pelletseg-Event: job.<status>``, ``X-Pelletseg-Delivery: <uuid, the same on every retry>``
and ``X-Pelletseg-Signature`` (:mod:`webhooks.signing`). Any 2xx answer is a delivery; anything
else (other status, timeout, refused connection, redirect) is a failed attempt.
"""

from __future__ import annotations

import json

import httpx

from core.states import JOB_TERMINAL, JobStatus
from storage.jobtable.webhook_outbox import WebhookAttempt
from webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign
from webhooks.urls import WebhookUrlError, check_webhook_url

__all__ = ["USER_AGENT", "payload", "post"]

USER_AGENT = "pelletseg-webhook/1"


def payload(attempt: WebhookAttempt, fractions: dict | None = None,
            batch_counts: dict[str, int] | None = None) -> dict:
    """The JSON document POSTed for ``attempt``: ``event``, ``delivery_id`` and the ``job``
    (id, status notified, batch, source, labels, model, image size (px), rows, timings,
    error, the scene of a multi-image OME-TIFF, the job's warnings: :mod:`core.job_warnings`,
    ``[]`` for none); for a succeeded job also ``fractions`` (its ``fractions.json`` document: pixels and
    % per phase, or None where it could not be read); ``batch``: for a job of a batch, its
    jobs by status as of this attempt (``batch_counts``), their total and how many have
    ended, so a receiver sees when the whole batch has (None for a job outside a batch)."""
    job = attempt.job
    spec = job.spec or {}
    body: dict = {
        "event": f"job.{attempt.event}",
        "delivery_id": attempt.id,
        "job": {
            "id": job.id,
            "status": attempt.event,
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
            "finished_at": _iso(attempt.event_at),
            "error": job.error if attempt.event == JobStatus.FAILED else None,
            "scene": spec.get("scene"),
            "warnings": (job.outputs or {}).get("warnings") or [],
        },
    }
    if attempt.event == JobStatus.SUCCEEDED:
        body["fractions"] = fractions
    body["batch"] = None
    if job.batch_id is not None and batch_counts:
        body["batch"] = {
            "id": job.batch_id,
            "jobs_total": sum(batch_counts.values()),
            "jobs_ended": sum(n for status, n in batch_counts.items() if status in JOB_TERMINAL),
            "status_counts": dict(sorted(batch_counts.items())),
        }
    return body


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def post(attempt: WebhookAttempt, document: dict, secret: str, *, timeout_s: float,
         allow_private: bool) -> str | None:
    """POST ``document`` (see :func:`payload`) signed with ``secret`` to the job's webhook URL,
    after checking the URL again (:func:`webhooks.urls.check_webhook_url`).

    Args:
        timeout_s: Connect and read timeout of the POST (s).
        allow_private: Accept URLs resolving to private addresses (tests, closed networks).

    Returns:
        None on a 2xx answer, else the reason of the failure (one line).
    """
    url = attempt.job.webhook_url
    try:
        check_webhook_url(url, allow_private)
    except WebhookUrlError as e:
        return str(e)
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: f"job.{attempt.event}",
        DELIVERY_HEADER: attempt.id,
        SIGNATURE_HEADER: sign(secret, body),
    }
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}: {response.text[:200]}"
