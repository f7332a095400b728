"""End-of-job webhooks: the outbox on the jobs row, the SSRF guard and the HMAC signature.

The job table is the source of truth, so the notification is an *outbox* on the job's row:

- :func:`arm_webhook` gives the column values that the UPDATE ending a job (succeeded, failed,
  cancelled) writes in the same statement: ``webhook_status`` becomes ``pending`` when the job
  has a ``webhook_url`` (SQL ``CASE``), with the event, its time and ``webhook_next_at = now``.
  A job that ends again after a resume is armed again (attempts restart).
- the ``pelletseg.notify`` task claims the delivery (:meth:`WebhookOutbox.claim_webhook`:
  ``pending`` -> ``sending`` with a lease, one attempt more), POSTs, and records the outcome
  (:meth:`WebhookOutbox.finish_webhook`): ``delivered`` (with the time), ``pending`` again
  with exponential backoff, or ``failed`` after ``max_attempts``; the last error is kept.
- the reconciler re-sends due deliveries (:meth:`WebhookOutbox.due_webhooks`), so a lost
  message or a worker killed mid-delivery delays a webhook but never loses it.

Delivery is at least once: receivers deduplicate on the ``X-Pelletseg-Delivery`` header.

Signature (:func:`sign`, :func:`verify`): header ``X-Pelletseg-Signature: t=<unix seconds>,
v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>``, the scheme of Stripe's webhooks; a receiver
recomputes it over the raw body and rejects stale timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlparse

from sqlalchemy import case, select, update

from storage.db import as_utc
from storage.errors import WebhookUrlError
from storage.models import Job, utcnow
from storage.states import JOB_TERMINAL, JobStatus

SIGNATURE_HEADER = "X-Pelletseg-Signature"
EVENT_HEADER = "X-Pelletseg-Event"
DELIVERY_HEADER = "X-Pelletseg-Delivery"
#: Largest accepted difference between a signature's timestamp and the receiver's clock (s).
DEFAULT_TOLERANCE_S = 300
MAX_BACKOFF_S = 3600.0
#: Timestamp columns of a job row (SQLite returns them naive; they are all UTC).
JOB_TIMESTAMPS = ("created_at", "updated_at", "started_at", "finished_at", "webhook_event_at",
                  "webhook_next_at", "webhook_delivered_at")


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


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Pelletseg-Signature`` value of ``body``: ``t=<unix s>,v1=<hex HMAC-SHA256>``
    over ``b"<t>." + body`` with key ``secret`` (UTF-8)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True if ``header`` (an ``X-Pelletseg-Signature`` value) signs the raw ``body`` with
    ``secret`` and its timestamp is within ``tolerance_s`` of ``now`` (default: the clock).
    Compares in constant time."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        ts = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def check_webhook_url(url: str, allow_private: bool) -> str:
    """Check a webhook URL against server-side request forgery.

    It must be ``http(s)://host...`` without credentials, and every address ``host`` resolves
    to must be public (not loopback, private, link-local, multicast, reserved or unspecified)
    unless ``allow_private``. Called at submission and again before each delivery (the host
    may resolve elsewhere by then).

    Returns:
        ``url`` unchanged.

    Raises:
        WebhookUrlError: wrong scheme, credentials, no host, unresolvable host or a
            non-public address.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise WebhookUrlError(f"webhook_url {url!r} must be an http:// or https:// URL")
    if not parsed.hostname:
        raise WebhookUrlError(f"webhook_url {url!r} has no host")
    if parsed.username or parsed.password:
        raise WebhookUrlError(f"webhook_url {url!r} must not carry credentials")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        infos = socket.getaddrinfo(parsed.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as e:
        raise WebhookUrlError(f"webhook_url {url!r}: cannot resolve its host ({e})") from e
    if allow_private:
        return url
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise WebhookUrlError(
                f"webhook_url {url!r} resolves to {address}, a loopback, private, link-local "
                "or reserved address; webhooks must reach a public address"
            )
    return url


@dataclass(frozen=True)
class Delivery:
    """One claimed delivery attempt (the fencing token of :meth:`WebhookOutbox.finish_webhook`).

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


class WebhookOutbox:
    """Outbox operations on the jobs table (mixed into :class:`storage.jobs.JobStore`); needs
    ``self._tx()`` and ``self.get_job``. Each change is a conditional UPDATE."""

    def webhook_pending(self, job_id: str) -> bool:
        """True if the job has a webhook armed and not yet attempted (the cue to send its
        notify task at once)."""
        with self._tx() as conn:
            row = conn.execute(
                select(Job.webhook_status, Job.webhook_attempts).where(Job.id == job_id)
            ).first()
        return row is not None and row[0] == WebhookStatus.PENDING and row[1] == 0

    def claim_webhook(self, job_id: str, lease_seconds: float) -> Delivery | None:
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
        return Delivery(job=job, attempt=job.webhook_attempts, event=job.webhook_event,
                        event_at=job.webhook_event_at)

    def finish_webhook(
        self,
        delivery: Delivery,
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

    def due_webhooks(self, limit: int = 500) -> list[str]:
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
