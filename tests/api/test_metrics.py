"""GET /metrics: Prometheus exposition computed from the job table and the broker at scrape
time, without an API key; queue depth on the embedded broker and on a private Redis."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.states import JobStatus
from tests.api.conftest import make_api, make_settings, new_job, running_job
from tests.conftest import free_port, port_open

MODEL = "test-model"


def scrape(client) -> dict:
    """``{(sample name, frozenset(labels)): value}`` of one scrape (no Authorization)."""
    r = client.get("/metrics", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _succeeded(table, width: int, rows: int, reduce_seconds: float):
    job = running_job(table, rows=rows, done=tuple(range(rows)), width=width)
    assert table.jobs.get(job.id).status == JobStatus.REDUCING
    table.jobs.set_outputs(job.id, {"labels_tif": "x", "reduce_seconds": reduce_seconds})
    assert table.jobs.transition(job.id, JobStatus.SUCCEEDED)
    return job


def _fill(api):
    _succeeded(api.table, width=100, rows=2, reduce_seconds=0.5)
    _succeeded(api.table, width=200, rows=3, reduce_seconds=42.0)
    running_job(api.table, rows=4, done=(0, 2), width=50)
    failed = running_job(api.table, rows=2, done=(1,), width=10)
    assert api.table.jobs.transition(failed.id, JobStatus.FAILED, error="x")
    new_job(api.table)


def _check_table(m: dict) -> None:
    def jobs(status):
        return m[("pelletseg_jobs", frozenset({("status", status)}))]

    assert (jobs("succeeded"), jobs("running"), jobs("failed"), jobs("queued"),
            jobs("cancelled")) == (2, 1, 1, 1, 0)
    assert m[("pelletseg_job_table_up", frozenset())] == 1
    # rows done: 2 + 3 (succeeded) + 2 (running) + 1 (failed); pixels: rows of 10 px.
    assert m[("pelletseg_rows_done_total", frozenset())] == 8
    assert m[("pelletseg_pixels_done_total", frozenset())] == (
        100 * 20 + 200 * 30 + 2 * 50 * 10 + 10 * 10)
    assert m[("pelletseg_active_rows", frozenset({("status", "done")}))] == 2
    assert m[("pelletseg_active_rows", frozenset({("status", "pending")}))] == 2
    assert m[("pelletseg_reduce_duration_seconds_count", frozenset())] == 2
    assert m[("pelletseg_reduce_duration_seconds_sum", frozenset())] == 42.5
    assert m[("pelletseg_reduce_duration_seconds_bucket", frozenset({("le", "1.0")}))] == 1
    assert m[("pelletseg_reduce_duration_seconds_bucket", frozenset({("le", "30.0")}))] == 1
    assert m[("pelletseg_reduce_duration_seconds_bucket", frozenset({("le", "60.0")}))] == 2
    assert m[("pelletseg_reduce_duration_seconds_bucket", frozenset({("le", "+Inf")}))] == 2


def test_metrics_from_the_job_table_and_embedded_broker(api):
    _fill(api)
    for source in ("s3://b/1.tif", "s3://b/2.tif"):  # two plan messages wait in the broker
        assert api.client.post("/v1/jobs", json={"source_url": source}).status_code == 202
    m = scrape(api.client)
    assert m[("pelletseg_jobs", frozenset({("status", "queued")}))] == 3
    m[("pelletseg_jobs", frozenset({("status", "queued")}))] = 1
    _check_table(m)
    assert m[("pelletseg_broker_up", frozenset())] == 1
    assert m[("pelletseg_queue_messages", frozenset({("queue", "plan")}))] == 2
    assert m[("pelletseg_queue_messages", frozenset({("queue", "rows")}))] == 0


def test_metrics_when_the_broker_is_down(tmp_path):
    api = make_api(make_settings(tmp_path, default_model=MODEL,
                                 broker_url=f"redis://127.0.0.1:{free_port()}/0"))
    m = scrape(api.client)
    assert m[("pelletseg_broker_up", frozenset())] == 0
    assert m[("pelletseg_job_table_up", frozenset())] == 1
    assert not any(name == "pelletseg_queue_messages" for name, _ in m)


@pytest.fixture
def private_redis():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not port_open(port):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def test_queue_depth_on_redis_with_a_queue_prefix(tmp_path, private_redis):
    api = make_api(make_settings(tmp_path, default_model=MODEL, broker_url=private_redis,
                                 queue_prefix="site7-"))
    for i in range(3):
        api.client.post("/v1/jobs", json={"source_url": f"s3://b/{i}.tif"})
    m = scrape(api.client)
    assert m[("pelletseg_queue_messages", frozenset({("queue", "plan")}))] == 3
    assert m[("pelletseg_queue_messages", frozenset({("queue", "reduce")}))] == 0


@pytest.mark.postgres
def test_metrics_on_postgres(tmp_path, empty_pg_url):
    api = make_api(make_settings(tmp_path, default_model=MODEL, database_url=empty_pg_url))
    _fill(api)
    _check_table(scrape(api.client))


def test_queue_depth_on_rabbitmq(tmp_path):
    import uuid

    if not port_open(5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    prefix = f"t{uuid.uuid4().hex[:8]}-"  # private queues on the shared server, deleted after
    api = make_api(make_settings(tmp_path, default_model=MODEL, queue_prefix=prefix,
                                 broker_url="amqp://guest:guest@127.0.0.1:5672//"))
    try:
        for i in range(2):
            assert api.client.post("/v1/jobs", json={"source_url": f"s3://b/{i}.tif"}
                                   ).status_code == 202
        m = scrape(api.client)
        assert m[("pelletseg_broker_up", frozenset())] == 1
        assert m[("pelletseg_queue_messages", frozenset({("queue", "plan")}))] == 2
        assert m[("pelletseg_queue_messages", frozenset({("queue", "reduce")}))] == 0
    finally:
        with api.client.app.state.services.celery.connection_for_write() as conn:
            for q in ("plan", "rows", "reduce"):
                channel = conn.channel()
                try:
                    channel.queue_delete(prefix + q)
                except conn.channel_errors:
                    pass
                finally:
                    channel.close()
