"""Chaos: worker processes are SIGKILLed at random moments during a job of >= 40 rows. The job
still succeeds, its label map is byte-identical to an uninterrupted run's, its fractions are
equal and no row is counted twice. Real `celery worker` processes, real brokers: the embedded one, Redis, and SQS (moto server on 127.0.0.1)."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
import pyvips

from api.jobs import build_spec, submit_job
from cli.stack import LocalWorkers
from storage.db import upgrade
from storage.layout import FRACTIONS_JSON, LABELS, output_key
from storage.queues import PLAN_TASK, REDUCE_TASK, ROW_TASK, make_celery, send
from storage.states import JOB_TERMINAL, JobStatus
from tests.worker.conftest import DEMO_DATA, make_settings, read_tiff, sqs_settings
from worker.context import WorkerContext
from worker.planning import plan_job
from worker.reconciling import reconcile
from worker.reducing import reduce_job
from worker.registry import publish_package
from worker.segmenting import segment_row

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tall_image(tmp_path_factory):
    """A 480 x 3900 px strip of real micrographs: 41 rows of the test geometry (stride 96)."""
    tiles = [pyvips.Image.new_from_file(str(p)) for p in sorted(DEMO_DATA.glob("*.png"))]
    column = pyvips.Image.arrayjoin(tiles, across=1).crop(200, 0, 480, 3900)
    out = tmp_path_factory.mktemp("chaos") / "tall.png"
    column.pngsave(str(out))
    return out


def _reference(tmp_path, tiny_package, image):
    """Labels and fractions of an uninterrupted run (stage functions in this process)."""
    settings = make_settings(tmp_path / "reference")
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    sent: list[tuple] = []
    ctx = WorkerContext.from_settings(settings, lambda task, *args: sent.append((task, *args)))
    publish_package(ctx, tiny_package)
    job = ctx.jobs.create_job(build_spec(settings, str(image)))
    sent.append((PLAN_TASK, job.id))
    stages = {PLAN_TASK: plan_job, ROW_TASK: segment_row, REDUCE_TASK: reduce_job}
    while sent:
        task, *args = sent.pop(0)
        stages[task](ctx, *args)
    assert ctx.jobs.get_job(job.id).status == JobStatus.SUCCEEDED
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    return labels, json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))


@pytest.mark.parametrize("broker", ["embedded", pytest.param("redis", marks=pytest.mark.redis), "sqs"])
def test_sigkilled_workers_lose_nothing_and_count_nothing_twice(
    broker, tmp_path, tiny_package, tall_image, request
):
    ref_labels, ref_doc = _reference(tmp_path, tiny_package, tall_image)
    overrides = dict(lease_seconds=4, max_attempts=20, torch_threads=1,
                     pending_timeout_seconds=15)
    if broker == "redis":
        redis_url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/9"
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        overrides["broker_url"] = redis_url
    if broker == "sqs":
        endpoint = request.getfixturevalue("moto_endpoint")
        settings = sqs_settings(tmp_path / "chaos", endpoint, **overrides)
    else:
        settings = make_settings(tmp_path / "chaos", **overrides)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_celery(settings)
    ctx = WorkerContext.from_settings(settings, lambda task, *args: send(app, task, *args))
    publish_package(ctx, tiny_package)
    rng = random.Random(7)
    kills = 0
    with LocalWorkers(settings, 3) as pool:
        job = submit_job(settings, build_spec(settings, str(tall_image)), app=app)
        deadline = time.monotonic() + 420
        next_kill = time.monotonic() + rng.uniform(4, 8)
        while time.monotonic() < deadline:
            status = ctx.jobs.get_job(job.id).status
            if status in JOB_TERMINAL:
                break
            if kills < 5 and time.monotonic() >= next_kill:
                pool.kill(rng.randrange(3))
                kills += 1
                next_kill = time.monotonic() + rng.uniform(2, 6)
            reconcile(ctx)
            time.sleep(0.5)
    done = ctx.jobs.get_job(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert kills == 5
    rows = ctx.jobs.list_rows(job.id)
    assert len(rows) >= 40 and done.rows_total == len(rows)
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    assert labels.tobytes() == ref_labels.tobytes()
    doc = json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert doc["classes"] == ref_doc["classes"]
    counts = np.sum([r.counts for r in rows], axis=0)
    assert counts.sum() == 480 * 3900  # every pixel counted exactly once
