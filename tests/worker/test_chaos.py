"""Chaos: worker processes are SIGKILLed at random moments during a job of >= 40 rows. The job
still succeeds, its label map is byte-identical to an uninterrupted run's, its fractions are
equal and no row is counted twice. Real `celery worker` processes, real brokers: the embedded
one, Redis (the shared server, under a queue prefix of this run only), and SQS (moto server on
127.0.0.1)."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
import pyvips

from core.states import JOB_TERMINAL, JobStatus
from queues.app import make_celery, send
from storage.blobs.layout import FRACTIONS_JSON, LABELS, output_key
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.worker.conftest import (
    DEMO_DATA,
    make_settings,
    read_tiff,
    reference_run,
    sqs_settings,
    unique_prefix,
)
from worker.context import WorkerContext
from worker.local import LocalWorkers
from worker.stages.reconciling import reconcile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tall_image(tmp_path_factory):
    """A 480 x 3900 px strip of real micrographs: 41 rows of the test geometry (stride 96)."""
    tiles = [pyvips.Image.new_from_file(str(p)) for p in sorted(DEMO_DATA.glob("*.png"))]
    column = pyvips.Image.arrayjoin(tiles, across=1).crop(200, 0, 480, 3900)
    out = tmp_path_factory.mktemp("chaos") / "tall.png"
    column.pngsave(str(out))
    return out


@pytest.mark.parametrize(
    "broker", ["embedded", pytest.param("redis", marks=pytest.mark.redis), "sqs"])
def test_sigkilled_workers_lose_nothing_and_count_nothing_twice(
    broker, tmp_path, tiny_package, tall_image, request, broker_cleanup
):
    ref_labels, ref_doc = reference_run(tmp_path, tiny_package, tall_image)
    overrides = dict(lease_seconds=4, max_attempts=20, torch_threads=1,
                     pending_timeout_seconds=15)
    if broker == "redis":  # the shared server: a queue prefix of this run only
        overrides["broker_url"] = request.getfixturevalue("redis_url")
        overrides["queue_prefix"] = unique_prefix()
    if broker == "sqs":
        endpoint = request.getfixturevalue("moto_endpoint")
        settings = sqs_settings(tmp_path / "chaos", endpoint, **overrides)
    else:
        settings = make_settings(tmp_path / "chaos", **overrides)
    broker_cleanup(settings)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_celery(settings)
    ctx = WorkerContext.from_settings(settings, lambda task, *args: send(app, task, *args))
    ctx.models.publish(tiny_package)
    rng = random.Random(7)
    kills = 0
    with LocalWorkers(settings, 3) as pool:
        job = (svc := SubmissionService(settings, app=app)).submit(svc.build_spec(str(tall_image)))
        deadline = time.monotonic() + 420
        # Kill at random points of the job's progress (not of wall time, which varies with the
        # machine's speed): after a random number of rows done, spread over the job.
        # The last kill comes by row 24 of 41, so a fast job cannot end before it.
        kill_after = sorted(rng.sample(range(1, 25), 5))
        last_reconcile = 0.0
        while time.monotonic() < deadline:
            status = ctx.table.jobs.get(job.id).status
            if status in JOB_TERMINAL:
                break
            if kills < 5 and ctx.table.rows.progress(job.id).done >= kill_after[kills]:
                time.sleep(rng.uniform(0, 0.5))  # land anywhere inside the next rows
                pool.kill(rng.randrange(3))
                kills += 1
                last_kill = time.monotonic()
                continue  # check the next threshold at once
            if time.monotonic() - last_reconcile >= 1.0:  # as a beat would, not every poll
                reconcile(ctx)
                last_reconcile = time.monotonic()
            time.sleep(0.1)
    done = ctx.table.jobs.get(job.id)
    if kills:
        print(f"[{broker}] last kill to the job's end: {time.monotonic() - last_kill:.1f} s")
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert kills == 5
    rows = ctx.table.rows.list(job.id)
    assert len(rows) >= 40 and done.rows_total == len(rows)
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    assert labels.tobytes() == ref_labels.tobytes()
    doc = json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert doc["classes"] == ref_doc["classes"]
    counts = np.sum([r.counts for r in rows], axis=0)
    assert counts.sum() == 480 * 3900  # every pixel counted exactly once
