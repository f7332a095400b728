"""The webhook outbox on the jobs row (SQLite and PostgreSQL): armed by the UPDATE that ends a
job, claimed once, retried with backoff, recorded; and the HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from core.spec import JobSpec
from core.states import JobStatus
from storage.jobtable.tables import Job, utcnow
from storage.jobtable.webhook_outbox import backoff_seconds, delivery_id
from webhooks.signing import sign, verify

HOOK = "https://hooks.example.com/pelletseg"


def _job(store, webhook: str | None = HOOK):
    return store.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="s3://b/x.tif",
                                     model="m", webhook_url=webhook))


def _running(store, rows: int = 2, webhook: str | None = HOOK):
    job = _job(store, webhook)
    assert store.jobs.transition(job.id, JobStatus.PLANNING)
    store.rows.insert(job.id, [(i * 10, i * 10 + 10) for i in range(rows)])
    assert store.jobs.transition(job.id, JobStatus.RUNNING, rows_total=rows, width=10, height=20)
    return job


def test_signature_verifies_and_detects_tampering():
    body = b'{"event":"job.succeeded"}'
    header = sign("s3cret", body, timestamp=1_700_000_000)
    mac = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert verify("s3cret", header, body, now=1_700_000_100)
    assert not verify("s3cret", header, body + b" ", now=1_700_000_100)  # body altered
    assert not verify("other", header, body, now=1_700_000_100)  # wrong secret
    assert not verify("s3cret", header, body, now=1_700_000_000 + 301)  # replayed later
    assert not verify("s3cret", header.replace("t=1700000000", "t=1700000050"), body,
                      now=1_700_000_100)  # timestamp altered
    assert not verify("s3cret", "garbage", body)
    assert verify("s3cret", sign("s3cret", body), body)


def test_backoff_doubles_with_jitter_and_is_capped():
    for attempt, base in [(1, 10), (2, 20), (3, 40), (6, 320)]:
        delays = [backoff_seconds(attempt, 10) for _ in range(50)]
        assert all(base <= d <= base * 1.25 for d in delays)
    assert backoff_seconds(40, 10) <= 3600 * 1.25


def test_ending_a_job_arms_its_webhook_in_the_same_update(table):
    job = _job(table)
    assert table.jobs.get(job.id).webhook_status is None
    assert table.jobs.transition(job.id, JobStatus.CANCELLED)
    ended = table.jobs.get(job.id)
    assert (ended.webhook_status, ended.webhook_event, ended.webhook_attempts) == (
        "pending", "cancelled", 0)
    assert ended.webhook_event_at == ended.finished_at and ended.webhook_next_at <= utcnow()
    assert table.webhooks.pending(job.id)
    assert table.webhooks.due() == [job.id]


def test_jobs_without_a_webhook_are_never_armed(table):
    job = _job(table, webhook=None)
    assert table.jobs.transition(job.id, JobStatus.FAILED, error="x")
    assert table.jobs.get(job.id).webhook_status is None
    assert not table.webhooks.pending(job.id) and table.webhooks.due() == []


def test_row_failures_and_expired_leases_arm_the_webhook(table):
    by_row = _running(table)
    assert table.rows.claim(by_row.id, 0, "w", lease_seconds=60).claimed
    table.rows.fail(by_row.id, 0, "boom", max_attempts=1)
    by_lease = _running(table)
    assert table.rows.claim(by_lease.id, 1, "w", lease_seconds=-1).claimed
    table.recovery.expire_leases(max_attempts=1)
    for job in (by_row, by_lease):
        ended = table.jobs.get(job.id)
        assert ended.status == JobStatus.FAILED
        assert (ended.webhook_status, ended.webhook_event) == ("pending", "failed")
    assert sorted(table.webhooks.due()) == sorted([by_row.id, by_lease.id])


def test_a_delivery_is_claimed_once_and_delivered(table):
    job = _job(table)
    table.jobs.transition(job.id, JobStatus.CANCELLED)
    claim = table.webhooks.claim(job.id, lease_seconds=60)
    assert claim is not None and claim.attempt == 1 and claim.event == "cancelled"
    assert claim.id == delivery_id(job.id, claim.event_at)
    assert table.webhooks.claim(job.id, lease_seconds=60) is None  # leased
    assert table.webhooks.due() == [] and not table.webhooks.pending(job.id)
    status, retry = table.webhooks.finish(claim, None, max_attempts=3, backoff_base_s=1)
    assert (status, retry) == ("delivered", None)
    done = table.jobs.get(job.id)
    assert done.webhook_status == "delivered" and done.webhook_delivered_at is not None
    assert table.webhooks.claim(job.id, lease_seconds=60) is None


def test_failures_back_off_then_fail_with_the_last_error(table):
    job = _job(table)
    table.jobs.transition(job.id, JobStatus.CANCELLED)
    claim = table.webhooks.claim(job.id, lease_seconds=60)
    status, retry = table.webhooks.finish(claim, "HTTP 500", max_attempts=2, backoff_base_s=30)
    assert status == "pending" and 30 <= retry <= 37.5
    pending = table.jobs.get(job.id)
    assert pending.webhook_last_error == "HTTP 500"
    assert pending.webhook_next_at >= utcnow() + timedelta(seconds=25)
    assert table.webhooks.claim(job.id, lease_seconds=60) is None  # not due yet
    assert table.webhooks.due() == []
    with table.webhooks._tx() as conn:  # time passes
        conn.execute(update(Job).where(Job.id == job.id).values(webhook_next_at=utcnow()))
    claim = table.webhooks.claim(job.id, lease_seconds=60)
    assert claim.attempt == 2
    status, retry = table.webhooks.finish(claim, "timeout", max_attempts=2, backoff_base_s=30)
    assert (status, retry) == ("failed", None)
    failed = table.jobs.get(job.id)
    assert (failed.webhook_status, failed.webhook_attempts, failed.webhook_last_error) == (
        "failed", 2, "timeout")
    assert failed.status == JobStatus.CANCELLED  # the job itself is untouched


def test_a_dead_senders_lease_runs_out_and_a_new_ending_supersedes_it(table):
    job = _running(table)
    table.jobs.transition(job.id, JobStatus.FAILED, error="first")
    stale = table.webhooks.claim(job.id, lease_seconds=-1)  # its worker dies
    assert table.webhooks.due() == [job.id]
    # Meanwhile the job is resumed and fails again: the outbox is re-armed.
    assert table.jobs.transition(job.id, JobStatus.RUNNING)
    time.sleep(0.01)
    assert table.jobs.transition(job.id, JobStatus.FAILED, error="second")
    rearmed = table.jobs.get(job.id)
    assert (rearmed.webhook_status, rearmed.webhook_attempts) == ("pending", 0)
    assert rearmed.webhook_event_at > stale.event_at
    # The stale attempt's outcome is not recorded over the new event.
    assert table.webhooks.finish(stale, None, max_attempts=3, backoff_base_s=1) == (None, None)
    fresh = table.webhooks.claim(job.id, lease_seconds=60)
    assert fresh.attempt == 1 and fresh.id != stale.id
    assert fresh.job.error == "second"


@pytest.mark.parametrize("count", [3])
def test_concurrent_claims_only_one_wins(table, count):
    from concurrent.futures import ThreadPoolExecutor

    job = _job(table)
    table.jobs.transition(job.id, JobStatus.CANCELLED)
    with ThreadPoolExecutor(count) as pool:
        claims = list(pool.map(lambda _: table.webhooks.claim(job.id, 60), range(count)))
    assert sum(c is not None for c in claims) == 1
