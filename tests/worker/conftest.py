"""Fixtures for stage and pipeline tests: a stack (job table, store, the tiny model of
``tests/conftest.py`` published) and helpers to run and read jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips

from core.settings import Settings
from imaging.mosaic import SAMPLES
from storage.jobtable.engine import upgrade
from tests.conftest import CLASSES  # noqa: F401 - re-exported: tests import it from here
from worker.context import WorkerContext

DEMO_DATA = SAMPLES


def make_settings(home: Path, **overrides) -> Settings:
    """Settings of a test stack under ``home`` with a small tile geometry."""
    values = dict(home=home, default_model="tiny", tile_size=128, halo=16, batch_size=8,
                  torch_threads=1, lease_seconds=120)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def stack(tmp_path, tiny_package):
    """Settings + worker context over SQLite and a local store, tiny model published; the
    context's ``enqueue`` appends to ``ctx.sent`` instead of using a broker."""
    settings = make_settings(tmp_path / "home")
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    sent: list[tuple] = []
    ctx = WorkerContext.from_settings(settings, lambda task, *args: sent.append((task, *args)))
    ctx.sent = sent
    ctx.models.publish(tiny_package)
    return ctx


def read_tiff(path: Path, page: int = 0) -> np.ndarray:
    """Pixels of one page of a TIFF as (H, W) or (H, W, C)."""
    img = pyvips.Image.new_from_file(str(path), page=page)
    arr = np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8,
                     shape=(img.height, img.width, img.bands))
    return arr[..., 0] if img.bands == 1 else arr


def unique_prefix() -> str:
    """A queue prefix no other test run uses (``PELLETSEG_QUEUE_PREFIX``)."""
    import uuid

    return f"t{uuid.uuid4().hex[:10]}-"


def sqs_settings(home: Path, endpoint: str, **overrides) -> Settings:
    """Settings for SQS on the moto server: a fresh queue prefix, each queue created with its
    dead-letter queue and redrive policy (:func:`queues.deadletters.create_sqs_queues`), and
    predefined for kombu; 1 s long polls, so a redelivered message is back after 1 s."""
    from queues.deadletters import create_sqs_queues

    host = endpoint.removeprefix("http://")
    values = dict(queue_prefix=unique_prefix(), broker_url=f"sqs://testing:testing@{host}")
    values.update(overrides)
    settings = make_settings(home, **values)
    predefined = create_sqs_queues(settings)
    options = {"region": "us-east-1", "is_secure": False, "wait_time_seconds": 1,
               "predefined_queues": predefined}
    return make_settings(home, broker_transport_options=options, **values)


@pytest.fixture
def broker_cleanup():
    """Call with a :class:`Settings`; its prefixed queues and broker keys are deleted after
    the test (``queues.deadletters.delete_queues``)."""
    from queues.deadletters import delete_queues

    registered: list[Settings] = []
    yield registered.append
    for settings in registered:
        delete_queues(settings)


def reference_run(tmp_path: Path, tiny_package: Path, image: Path, **overrides):
    """Labels (H, W) uint8 and the fractions document of an uninterrupted run of ``image``
    (stage functions called in this process, no broker)."""
    import json

    from core.states import JobStatus
    from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK
    from storage.blobs.layout import FRACTIONS_JSON, LABELS, output_key
    from submission import SubmissionService
    from worker.stages.planning import plan_job
    from worker.stages.reducing import reduce_job
    from worker.stages.segmenting import segment_row

    settings = make_settings(tmp_path / "reference", **overrides)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    sent: list[tuple] = []
    ctx = WorkerContext.from_settings(settings, lambda task, *args: sent.append((task, *args)))
    ctx.models.publish(tiny_package)
    job = ctx.table.jobs.create(SubmissionService(settings).build_spec(str(image)))
    sent.append((PLAN_TASK, job.id))
    stages = {PLAN_TASK: plan_job, ROW_TASK: segment_row, REDUCE_TASK: reduce_job}
    while sent:
        task, *args = sent.pop(0)
        stages[task](ctx, *args)
    assert ctx.table.jobs.get(job.id).status == JobStatus.SUCCEEDED
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    return labels, json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))


def job_state(what: str, ctx, job_id: str) -> str:
    """``what`` with the job's status and its rows' (index, status, attempts, worker), for a
    failure message of a wait."""
    job = ctx.table.jobs.get(job_id)
    rows = [(r.index, str(r.status), r.attempts, r.worker) for r in ctx.table.rows.list(job_id)]
    return f"{what}: job {job.status} ({job.error}), rows {rows}"
