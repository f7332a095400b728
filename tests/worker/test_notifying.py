"""End-of-job webhooks through a local receiver (a small HTTP server in the test): signed
bodies, retries with backoff after receiver failures, failures recorded on the job, the
notify task sent by whoever ended the job (API cancel, a stage task), the reconciler's sweep."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from celery.contrib.testing.worker import start_worker

from core.spec import JobSpec
from core.states import JobStatus
from queues.names import NOTIFY_TASK
from storage.blobs.layout import FRACTIONS_JSON, output_key
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.worker.conftest import make_settings
from webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from worker.context import WorkerContext
from worker.stages.notifying import deliver
from worker.stages.reconciling import reconcile
from worker.tasks import make_worker_app

SECRET = "receiver-shared-secret"


class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST with the next status of ``statuses``
    (the last one repeats) and recording ``(monotonic time, headers, body)``."""

    def __init__(self, statuses: list[int]):
        self.statuses, self.calls = list(statuses), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((time.monotonic(), dict(self.headers), body))
                code = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else \
                    receiver.statuses[0]
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/pelletseg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(statuses):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _settings(tmp_path, **overrides):
    values = dict(webhook_secret=SECRET, allow_private_webhooks=True,
                  webhook_backoff_seconds=0.3, webhook_max_attempts=3)
    values.update(overrides)
    settings = make_settings(tmp_path / "home", **values)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    return settings


def _wait(table, job_id, done, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = table.jobs.get(job_id)
        if done(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"webhook of {job_id} still {table.jobs.get(job_id).webhook_status}")


def _ended(job):
    return job.webhook_status in ("delivered", "failed")


def test_retries_with_backoff_until_delivered_signed(tmp_path, receiver_factory):
    receiver = receiver_factory([500, 502, 204])
    settings = _settings(tmp_path)
    app = make_worker_app(settings)
    spec = JobSpec(source_url="s3://b/p.tif", model="tiny", tile_size=128, halo=16, webhook_url=receiver.url,
                      labels={"sample": "P-9"})
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    job = ctx.table.jobs.create(spec)
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=["plan"], loglevel="WARNING", shutdown_timeout=30):
        SubmissionService(settings, app=app).cancel(job.id)  # the API's cancel sends the notify task
        done = _wait(ctx.table, job.id, _ended)
    assert (done.webhook_status, done.webhook_attempts, done.webhook_last_error) == (
        "delivered", 3, None)
    assert done.webhook_delivered_at is not None and done.status == JobStatus.CANCELLED
    assert len(receiver.calls) == 3
    ids = set()
    for _, headers, body in receiver.calls:
        assert verify(SECRET, headers[SIGNATURE_HEADER], body)
        assert not verify("another-secret", headers[SIGNATURE_HEADER], body)
        assert headers[EVENT_HEADER] == "job.cancelled"
        ids.add(headers[DELIVERY_HEADER])
        doc = json.loads(body)
        assert doc["event"] == "job.cancelled" and doc["job"]["id"] == job.id
        assert doc["job"]["labels"] == {"sample": "P-9"} and doc["delivery_id"] in ids
    assert len(ids) == 1  # one notification, retried: receivers deduplicate on it
    times = [t for t, _, _ in receiver.calls]
    assert times[1] - times[0] >= 0.3 and times[2] - times[1] >= 0.6  # exponential backoff


def test_a_stage_that_ends_the_job_sends_the_webhook_and_failures_are_recorded(
        tmp_path, receiver_factory):
    receiver = receiver_factory([503])
    settings = _settings(tmp_path, webhook_max_attempts=2)
    app = make_worker_app(settings)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    # No model is registered: the planner fails the job; the notify task follows it.
    spec = JobSpec(source_url="s3://b/p.tif", model="not-registered", tile_size=128, halo=16, webhook_url=receiver.url)
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=["plan"], loglevel="WARNING", shutdown_timeout=30):
        job = SubmissionService(settings, app=app).submit(spec)
        done = _wait(ctx.table, job.id, _ended)
    assert done.status == JobStatus.FAILED and "not-registered" in done.error
    assert (done.webhook_status, done.webhook_attempts) == ("failed", 2)
    assert done.webhook_last_error.startswith("HTTP 503") and done.webhook_delivered_at is None
    assert len(receiver.calls) == 2
    doc = json.loads(receiver.calls[0][2])
    assert doc["event"] == "job.failed" and "not-registered" in doc["job"]["error"]


def test_succeeded_payload_carries_the_fractions(tmp_path, receiver_factory):
    receiver = receiver_factory([200])
    settings = _settings(tmp_path)
    sent = []
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: sent.append(a))
    job = ctx.table.jobs.create(JobSpec(source_url="s3://b/p.ome.tif", model="tiny", tile_size=128,
                                        halo=16, webhook_url=receiver.url, scene=2))
    fractions = {"job_id": job.id, "classes": [{"name": "oxide", "pixels": 7, "percent": 100}]}
    ctx.blobs.put_bytes(output_key(job.id, FRACTIONS_JSON), json.dumps(fractions).encode())
    warned = [{"code": "planes_left_out", "message": "the file holds 3 images of this size"}]
    for status in (JobStatus.PLANNING, JobStatus.RUNNING, JobStatus.REDUCING,
                   JobStatus.SUCCEEDED):
        extra = {"outputs": {"warnings": warned}} if status == JobStatus.RUNNING else {}
        assert ctx.table.jobs.transition(job.id, status, **extra)
    assert deliver(ctx, job.id) is None
    assert deliver(ctx, job.id) is None  # a duplicate message finds nothing due
    assert len(receiver.calls) == 1
    doc = json.loads(receiver.calls[0][2])
    assert doc["event"] == "job.succeeded" and doc["fractions"] == fractions
    assert (doc["job"]["scene"], doc["job"]["warnings"]) == (2, warned)
    assert doc["batch"] is None  # not in a batch
    assert ctx.table.jobs.get(job.id).webhook_status == "delivered"


def test_a_batch_jobs_payload_says_how_much_of_the_batch_has_ended(tmp_path, receiver_factory):
    """Each job of a batch notifies alone; its body counts the batch's jobs by status as of the
    attempt, so the receiver sees when the last one ended."""
    receiver = receiver_factory([200])
    ctx = WorkerContext.from_settings(_settings(tmp_path), enqueue=lambda *a: None)

    def job(name, webhook=True):
        return ctx.table.jobs.create(JobSpec(source_url=f"s3://b/{name}.tif", model="tiny",
                                             tile_size=128, halo=16,
                                             webhook_url=receiver.url if webhook else None),
                                     batch_id="batch-7")

    first, second, third = job("P-1"), job("P-2"), job("P-3", webhook=False)
    ctx.table.jobs.create(JobSpec(source_url="s3://b/other.tif", model="tiny", tile_size=128,
                                  halo=16), batch_id="batch-8")  # another batch: not counted
    assert ctx.table.jobs.transition(first.id, JobStatus.FAILED, error="gone")
    assert ctx.table.jobs.transition(third.id, JobStatus.PLANNING)
    deliver(ctx, first.id)
    assert ctx.table.jobs.transition(third.id, JobStatus.CANCELLED)
    assert ctx.table.jobs.transition(second.id, JobStatus.CANCELLED)
    deliver(ctx, second.id)
    batches = [json.loads(body)["batch"] for _, _, body in receiver.calls]
    assert batches == [
        {"id": "batch-7", "jobs_total": 3, "jobs_ended": 1,
         "status_counts": {"failed": 1, "planning": 1, "queued": 1}},
        {"id": "batch-7", "jobs_total": 3, "jobs_ended": 3,  # the whole batch has ended
         "status_counts": {"cancelled": 2, "failed": 1}},
    ]
    assert ctx.table.jobs.batch_counts("nope") == {}


@pytest.mark.parametrize("overrides, error", [
    ({"webhook_secret": None}, "no PELLETSEG_WEBHOOK_SECRET is set on this worker"),
    ({"allow_private_webhooks": False}, "resolves to 127.0.0.1"),
])
def test_unsigned_or_private_deliveries_are_refused_by_the_worker(
        tmp_path, receiver_factory, overrides, error):
    receiver = receiver_factory([200])
    api_settings = _settings(tmp_path)
    job_id = WorkerContext.from_settings(api_settings, enqueue=lambda *a: None).table.jobs.create(
        JobSpec(source_url="s3://b/p.tif", model="tiny", tile_size=128, halo=16, webhook_url=receiver.url)).id
    ctx = WorkerContext.from_settings(_settings(tmp_path, **overrides), enqueue=lambda *a: None)
    assert ctx.table.jobs.transition(job_id, JobStatus.CANCELLED)
    retry_in = deliver(ctx, job_id)
    assert retry_in is not None and retry_in >= 0.3
    assert error in ctx.table.jobs.get(job_id).webhook_last_error
    assert receiver.calls == []


def test_reconciler_sends_due_deliveries(tmp_path):
    settings = _settings(tmp_path)
    sent = []
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: sent.append(a))
    job = ctx.table.jobs.create(JobSpec(source_url="s3://b/p.tif", model="tiny", tile_size=128, halo=16,
                                         webhook_url="http://127.0.0.1:9/hook"))
    quiet = ctx.table.jobs.create(JobSpec(source_url="s3://b/q.tif", model="tiny", tile_size=128, halo=16))
    for j in (job, quiet):  # ended while the broker was down: nobody sent the notify task
        assert ctx.table.jobs.transition(j.id, JobStatus.CANCELLED)
    assert reconcile(ctx) == []
    assert sent == [(NOTIFY_TASK, job.id)]
