"""The webhook outbox on the jobs row: end-of-job notifications that survive any crash.

The job table is the source of truth, so the notification is an *outbox* on the job's row:

- :func:`arm_webhook` gives the column values that the UPDATE ending a job (succeeded, failed,
  cancelled) writes in the same statement: ``webhook_status`` becomes ``pending`` when the job
  has a ``webhook_url`` (SQL ``CASE``), with the event, its time and ``webhook_next_at = now``.
  A job that ends again after a resume is armed again (attempts restart).
- the ``pelletseg.notify`` task claims the delivery (:meth:`WebhookOutbox.claim`:
  ``pending`` -> ``sending`` with a lease, one attempt more), POSTs, and records the outcome
  (:meth:`WebhookOutbox.finish`): ``delivered`` (with the time), ``pending`` again with
  exponential backoff, or ``failed`` after ``max_attempts``; the last error is kept.
- the reconciler re-sends due deliveries (:meth:`WebhookOutbox.due`), so a lost message or a
  worker killed mid-delivery delays a webhook but never loses it.

Delivery is at least once: receivers deduplicate on the ``X-Pelletseg-Delivery`` header. What
goes on the wire (body, signature, URL rules) is :mod:`webhooks`'.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, select, update

from core.states import JOB_TERMINAL, JobStatus
from storage.jobtable.base import Repository
from storage.jobtable.engine import as_utc
from storage.jobtable.retries import with_retries
from storage.jobtable.tables import JOB_TIMESTAMPS, Job, utcnow

__all__ = ["MAX_BACKOFF_S", "WebhookAttempt", "WebhookOutbox", "WebhookStatus", "arm_webhook",
           "backoff_seconds", "delivery_id"]

MAX_BACKOFF_S = 3600.0


class WebhookStatus:
    """Values of ``jobs.webhook_status`` (NULL: nothing to deliver)."""

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


def arm_webhook(target: JobStatus, now: datetime) -> dict:
    """Column values arming the webhook of a job that moves to ``target``, for the same UPDATE.

    Returns an empty dict for a non-terminal ``target``; for a terminal one, the outbox reset
    to ``pending`` (due ``now``) if the job has a ``webhook_url``, else ``webhook_status``
    NULL.
    """
    if target not in JOB_TERMINAL:
        return {}
    return dict(
        webhook_status=case((Job.webhook_url.is_(None), None), else_=WebhookStatus.PENDING),
        webhook_event=target.value,
        webhook_event_at=now,
        webhook_attempts=0,
        webhook_next_at=now,
        webhook_last_error=None,
        webhook_delivered_at=None,
    )


def backoff_seconds(attempt: int, base_s: float, *, jitter: float = 0.25) -> float:
    """Delay after failed attempt number ``attempt`` (1-based): ``base_s * 2**(attempt-1)``,
    capped at one hour, times a random factor in ``[1, 1 + jitter]`` (s)."""
    delay = min(MAX_BACKOFF_S, base_s * 2 ** max(0, attempt - 1))
    return delay * (1 + random.uniform(0, jitter))


def delivery_id(job_id: str, event_at: datetime) -> str:
    """Deterministic id of one notification (same for every retry of it): a UUID-5 of the job
    id and the time the job ended."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pelletseg:{job_id}:{event_at.isoformat()}"))


@dataclass(frozen=True)
class WebhookAttempt:
    """One claimed delivery attempt of a job's webhook (the fencing token of
    :meth:`WebhookOutbox.finish`).

    Attributes:
        job: Snapshot of the job row at claim time.
        attempt: This attempt's number (1-based).
        event: The terminal status notified (``succeeded``, ``failed``, ``cancelled``).
        event_at: When the job reached it (UTC).
    """

    job: Job
    attempt: int
    event: str
    event_at: datetime

    @property
    def id(self) -> str:
        """See :func:`delivery_id`."""
        return delivery_id(self.job.id, self.event_at)


@with_retries  # lost/refused connections retried with backoff (storage/jobtable/retries.py)
class WebhookOutbox(Repository):
    """Outbox operations on the jobs table; each change is a conditional UPDATE.

    Raises (every method):
        StorageError: the database failed or is unreachable.
    """

    def pending(self, job_id: str) -> bool:
        """True if the job has a webhook armed and not yet attempted (the cue to send its
        notify task at once)."""
        with self._tx() as conn:
            row = conn.execute(
                select(Job.webhook_status, Job.webhook_attempts).where(Job.id == job_id)
            ).first()
        return row is not None and row[0] == WebhookStatus.PENDING and row[1] == 0

    def claim(self, job_id: str, lease_seconds: float) -> WebhookAttempt | None:
        """Take the next delivery attempt of a job's webhook: ``pending`` (or ``sending`` whose
        lease ran out: the worker died) and due -> ``sending``, attempts + 1, leased for
        ``lease_seconds``.

        Returns:
            The claimed :class:`Delivery`, or None when nothing is due (delivered, failed, not
            yet due, or claimed by another worker).
        """
        now = utcnow()
        claim = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.webhook_status.in_([WebhookStatus.PENDING, WebhookStatus.SENDING]),
                Job.webhook_next_at <= now,
            )
            .values(
                webhook_status=WebhookStatus.SENDING,
                webhook_attempts=Job.webhook_attempts + 1,
                webhook_next_at=now + timedelta(seconds=lease_seconds),
            )
        )
        with self._tx() as conn:
            if conn.execute(claim).rowcount != 1:
                return None
            job = as_utc(conn.execute(select(Job).where(Job.id == job_id)).scalar_one(),
                         *JOB_TIMESTAMPS)
        return WebhookAttempt(job=job, attempt=job.webhook_attempts, event=job.webhook_event,
                        event_at=job.webhook_event_at)

    def finish(
        self,
        delivery: WebhookAttempt,
        error: str | None,
        *,
        max_attempts: int,
        backoff_base_s: float,
    ) -> tuple[str | None, float | None]:
        """Record the outcome of a claimed attempt.

        ``error`` None: ``delivered`` with the time. Otherwise the error is kept in
        ``webhook_last_error`` and the delivery goes back to ``pending``, due after
        :func:`backoff_seconds`, or to ``failed`` after ``max_attempts`` attempts. Nothing is
        written if the job ended again meanwhile (re-armed: a newer event supersedes this one).

        Returns:
            ``(new status, retry in seconds)``: status None if nothing was written; the delay
            only for ``pending``.
        """
        now = utcnow()
        values: dict = {"webhook_last_error": None if error is None else error[:2000]}
        retry_in = None
        if error is None:
            status = WebhookStatus.DELIVERED
            values.update(webhook_delivered_at=now, webhook_next_at=None)
        elif delivery.attempt >= max_attempts:
            status = WebhookStatus.FAILED
            values.update(webhook_next_at=None)
        else:
            status = WebhookStatus.PENDING
            retry_in = backoff_seconds(delivery.attempt, backoff_base_s)
            values.update(webhook_next_at=now + timedelta(seconds=retry_in))
        stmt = (
            update(Job)
            .where(
                Job.id == delivery.job.id,
                Job.webhook_status == WebhookStatus.SENDING,
                Job.webhook_attempts == delivery.attempt,
                Job.webhook_event_at == delivery.event_at,
            )
            .values(webhook_status=status, **values)
        )
        with self._tx() as conn:
            if conn.execute(stmt).rowcount != 1:
                return None, None
        return status, retry_in

    def due(self, limit: int = 500) -> list[str]:
        """Ids of jobs whose webhook delivery is due: ``pending`` past ``webhook_next_at``, or
        ``sending`` past its lease (the worker died mid-delivery)."""
        q = (
            select(Job.id)
            .where(
                Job.webhook_status.in_([WebhookStatus.PENDING, WebhookStatus.SENDING]),
                Job.webhook_next_at <= utcnow(),
            )
            .order_by(Job.webhook_next_at)
            .limit(limit)
        )
        with self._tx() as conn:
            return list(conn.execute(q).scalars())
