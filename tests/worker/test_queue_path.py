"""A job through a real Celery worker (``celery.contrib.testing.worker.start_worker``), never
eager mode: on the embedded stack (SQLite job table, kombu's SQLAlchemy transport on a SQLite
file), on the PostgreSQL, Redis and RabbitMQ servers of the machine, and on SQS (a moto server on
127.0.0.1 started by the tests)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from celery.contrib.testing.worker import start_worker

from api.jobs import build_spec, submit_job
from storage.db import upgrade
from storage.layout import FRACTIONS_JSON, LABELS, output_key
from storage.queues import QUEUES, make_celery
from storage.states import JOB_TERMINAL, JobStatus
from tests.conftest import port_open
from tests.worker.conftest import make_settings, read_tiff, sqs_settings
from worker.context import WorkerContext
from worker.inference import Segmenter
from worker.reading import open_image, read_rows
from worker.registry import publish_package
from worker.tasks import make_worker_app


def _wait(ctx, job_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ctx.jobs.get_job(job_id)
        if job.status in JOB_TERMINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


def _flush_redis(url):
    import redis

    redis.Redis.from_url(url).flushdb()


@pytest.fixture(params=[
    "embedded",
    pytest.param("postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    "rabbitmq",
    "sqs",
])
def queue_settings(request, tmp_path):
    if request.param == "embedded":
        return make_settings(tmp_path / "home")
    if request.param == "rabbitmq":
        if not port_open(5672):
            pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
        settings = make_settings(tmp_path / "home", broker_url="amqp://guest:guest@127.0.0.1:5672//")
        app = make_celery(settings)
        with app.connection_for_write() as conn:  # start from empty queues, declared as Celery does
            for q in QUEUES:
                queue = app.amqp.queues[q](conn.default_channel)
                queue.declare()
                queue.purge()
        return settings
    if request.param == "sqs":
        return sqs_settings(tmp_path / "home", request.getfixturevalue("moto_endpoint"))
    pg, redis_url = request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url")
    _flush_redis(redis_url)
    return make_settings(tmp_path / "home", database_url=pg, broker_url=redis_url)


def test_job_through_a_real_celery_worker(queue_settings, tiny_package, micrograph):
    settings = queue_settings
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_worker_app(settings)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    publish_package(ctx, tiny_package)
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=list(QUEUES), loglevel="WARNING", shutdown_timeout=60):
        job = submit_job(settings, build_spec(settings, str(micrograph)), app=app)
        done = _wait(ctx, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.model_sha256 and len(done.model_sha256) == 64
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    # The stitched label map equals tiled inference of the same model on the same pixels.
    segmenter = Segmenter(tiny_package, device="cpu")
    image = read_rows(open_image(micrograph, max_pixels=10**9), 0, 500)
    expected = segmenter.segment_array(image, tile_size=128, halo=16, batch_size=8)
    np.testing.assert_array_equal(labels, expected)
    doc = json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert sum(c["pixels"] for c in doc["classes"]) == 700 * 500
    assert [c["pixels"] for c in doc["classes"]] == np.bincount(labels.ravel(), minlength=3).tolist()
