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

from core.geometry import TileGeometry
from core.states import JOB_TERMINAL, JobStatus
from imaging.reading import open_image, read_rows
from queues.names import QUEUES, queue_name
from storage.blobs.layout import FRACTIONS_JSON, LABELS, output_key
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.conftest import port_open
from tests.worker.conftest import make_settings, read_tiff, sqs_settings, unique_prefix
from worker.context import WorkerContext
from worker.engine.segmenter import Segmenter
from worker.tasks import make_worker_app


def _wait(ctx, job_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ctx.table.jobs.get(job_id)
        if job.status in JOB_TERMINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


@pytest.fixture(params=[
    "embedded",
    pytest.param("postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    "rabbitmq",
    "sqs",
])
def queue_settings(request, tmp_path, broker_cleanup):
    """Settings of one broker; the shared Redis/RabbitMQ servers get a fresh queue prefix (no
    other run's queues or messages are seen, and none are left behind)."""
    if request.param == "embedded":
        return make_settings(tmp_path / "home")
    if request.param == "rabbitmq":
        if not port_open(5672):
            pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
        settings = make_settings(tmp_path / "home", queue_prefix=unique_prefix(),
                                 broker_url="amqp://guest:guest@127.0.0.1:5672//")
    elif request.param == "sqs":
        settings = sqs_settings(tmp_path / "home", request.getfixturevalue("moto_endpoint"))
    else:
        pg, redis_url = request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url")
        settings = make_settings(tmp_path / "home", database_url=pg, broker_url=redis_url,
                                 queue_prefix=unique_prefix())
    broker_cleanup(settings)
    return settings


def test_job_through_a_real_celery_worker(queue_settings, tiny_package, micrograph):
    settings = queue_settings
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_worker_app(settings)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    ctx.models.publish(tiny_package)
    queues = [queue_name(settings, q) for q in QUEUES]
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=queues, loglevel="WARNING", shutdown_timeout=60):
        job = (svc := SubmissionService(settings, app=app)).submit(svc.build_spec(str(micrograph)))
        done = _wait(ctx, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.model_sha256 and len(done.model_sha256) == 64
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    # The stitched label map equals tiled inference of the same model on the same pixels,
    # through the runtime the worker used (PELLETSEG_RUNTIME).
    segmenter = Segmenter(tiny_package, device="cpu", runtime=settings.runtime,
                          cache_dir=settings.resolved_export_cache_dir)
    image = read_rows(open_image(micrograph, max_pixels=10**9), 0, 500)
    expected = segmenter.segment_array(image, TileGeometry(128, 16), batch_size=8)
    np.testing.assert_array_equal(labels, expected)
    doc = json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert sum(c["pixels"] for c in doc["classes"]) == 700 * 500
    assert [c["pixels"] for c in doc["classes"]] == np.bincount(labels.ravel(), minlength=3).tolist()
