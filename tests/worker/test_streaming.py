"""The streaming stitcher (worker/stages/streaming.py) on a real stack (SQLite, local store, tiny
model): it stitches each row as soon as the row is done, the reducer then only adds the
fractions, and every way the stitcher can fail leaves the reducer to stitch the rows itself,
with the same outputs."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from core.states import JobStatus
from imaging.rendering import write_overlay
from queues.names import REDUCE_TASK, ROW_TASK, STITCH_TASK
from storage.blobs.layout import (
    CONFIDENCE,
    CONFIDENCE_JSON,
    FRACTIONS_JSON,
    LABELS,
    OVERLAY,
    PICTURES,
    STITCH_MANIFEST,
    confidence_row_key,
    output_key,
    row_key,
)
from submission import SubmissionService
from tests.conftest import wait_for
from tests.worker.conftest import read_tiff, reference_run
from worker.stages.confidence import write_confidence_pyramid
from worker.stages.planning import plan_job
from worker.stages.reducing import reduce_job
from worker.stages.segmenting import segment_row
from worker.stages.sources import source_path
from worker.stages.streaming import Staged, stitch_job, wait_for_stitcher


@pytest.fixture
def streaming(stack):
    stack.settings.stream_reduce = True
    stack.settings.stitch_poll_seconds = 0.02
    return stack


def _planned(ctx, source):
    job = ctx.table.jobs.create(SubmissionService(ctx.settings).build_spec(str(source)))
    plan_job(ctx, job.id)
    return ctx.table.jobs.get(job.id)


class _Stitcher(threading.Thread):
    """``stitch_job`` in a thread, as a reduce worker runs it beside the rows."""

    def __init__(self, ctx, job_id):
        super().__init__(daemon=True)
        self.ctx, self.job_id, self.result = ctx, job_id, None

    def run(self):
        self.result = stitch_job(self.ctx, self.job_id)


def _fetch_log(ctx, monkeypatch) -> list[str]:
    """Keys the context downloads or opens, in order (the stitcher's strips among them)."""
    seen: list[str] = []
    original = type(ctx).local_blob

    def local_blob(self, key):
        seen.append(key)
        return original(self, key)

    monkeypatch.setattr(type(ctx), "local_blob", local_blob)
    return seen


def test_rows_are_stitched_as_they_finish_and_the_reducer_only_adds_fractions(
        streaming, micrograph, tmp_path, tiny_package, monkeypatch):
    ctx = streaming
    job = _planned(ctx, micrograph)
    rows = job.rows_total
    assert ctx.sent[-1] == (STITCH_TASK, job.id)  # enqueued at planning, after the rows
    assert [t for t, *_ in ctx.sent].count(ROW_TASK) == rows
    fetched = _fetch_log(ctx, monkeypatch)
    stitcher = _Stitcher(ctx, job.id)
    stitcher.start()
    for index in range(rows - 1):
        assert segment_row(ctx, job.id, index) == "done"
    # before the last row exists, the stitcher has taken every strip that does, label and
    # confidence strips alike
    wait_for(lambda: [row_key(job.id, i) for i in range(rows - 1)]
             == [k for k in fetched if k.endswith(".tif") and "/rows/" in k
                 and ".confidence" not in k]
             and [confidence_row_key(job.id, i) for i in range(rows - 1)]
             == [k for k in fetched if k.endswith(".confidence.tif")],
             30, "the stitcher to take the done rows")
    assert stitcher.is_alive() and not ctx.blobs.exists(output_key(job.id, STITCH_MANIFEST))
    assert segment_row(ctx, job.id, rows - 1) == "done"
    stitcher.join(60)
    assert stitcher.result is True
    assert (REDUCE_TASK, job.id) in ctx.sent
    manifest = json.loads(ctx.blobs.get_bytes(output_key(job.id, STITCH_MANIFEST)))
    assert manifest["rows"] == [[r.index, r.checksum] for r in ctx.table.rows.list(job.id)]
    assert manifest["confidence"] is True
    assert not ctx.table.stitch.state(job.id)[1]  # released

    staged = {name: ctx.blobs.get_bytes(output_key(job.id, name))
              for name in (*PICTURES, CONFIDENCE)}
    doc = reduce_job(ctx, job.id)
    done = ctx.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED and done.outputs["streamed"] is True
    # the reducer stored the fractions and confidence.json and left the stitcher's pictures
    # and confidence pyramid as they were
    assert {n: ctx.blobs.get_bytes(output_key(job.id, n))
            for n in (*PICTURES, CONFIDENCE)} == staged
    assert done.outputs["confidence_tif"] == output_key(job.id, CONFIDENCE)
    assert json.loads(ctx.blobs.get_bytes(output_key(job.id, CONFIDENCE_JSON)))["pixels_total"] \
        == done.width * done.height
    # the stitcher's confidence pyramid is the one the reducer writes from the finished strips
    expected_confidence = tmp_path / "confidence.tif"
    write_confidence_pyramid([ctx.local_blob(confidence_row_key(job.id, i)) for i in range(rows)],
                             expected_confidence)
    assert np.array_equal(read_tiff(ctx.local_blob(output_key(job.id, CONFIDENCE))),
                          read_tiff(expected_confidence))
    labels, fractions = reference_run(tmp_path, tiny_package, micrograph)
    assert np.array_equal(read_tiff(ctx.local_blob(output_key(job.id, LABELS))), labels)
    assert doc == json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert [c["pixels"] for c in doc["classes"]] == [c["pixels"] for c in fractions["classes"]]
    # the overlay is the one drawn from the finished strips
    strips = [ctx.local_blob(row_key(job.id, i)) for i in range(rows)]
    expected = tmp_path / "overlay.tif"
    palette = ctx.models.meta(done.model_name, done.model_version).palette()
    write_overlay(source_path(ctx, done), strips, palette, expected)
    assert np.array_equal(read_tiff(ctx.local_blob(output_key(job.id, OVERLAY))),
                          read_tiff(expected))


def test_rows_without_confidence_strips_leave_the_confidence_to_the_reducer(streaming,
                                                                          micrograph):
    """Rows checkpointed before confidence existed: the stitcher still stages the pictures,
    records that it has no confidence pyramid, and the job succeeds without confidence
    outputs, as it did before streaming the confidence."""
    ctx = streaming
    job = _planned(ctx, micrograph)
    for index in range(job.rows_total):
        segment_row(ctx, job.id, index)
        ctx.blobs.delete(confidence_row_key(job.id, index))
    assert stitch_job(ctx, job.id) is True
    manifest = json.loads(ctx.blobs.get_bytes(output_key(job.id, STITCH_MANIFEST)))
    assert manifest["confidence"] is False
    assert not ctx.blobs.exists(output_key(job.id, CONFIDENCE))
    reduce_job(ctx, job.id)
    done = ctx.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED and done.outputs["streamed"] is True
    assert "confidence_tif" not in done.outputs


def test_a_second_stitcher_skips_and_a_rerun_finds_the_manifest(streaming, micrograph,
                                                                 monkeypatch):
    ctx = streaming
    job = _planned(ctx, micrograph)
    assert ctx.table.stitch.claim(job.id, "other-worker", lease_seconds=60)
    assert stitch_job(ctx, job.id) is False  # a duplicate delivery: the lease is taken
    assert ctx.table.stitch.release(job.id, "other-worker")
    for index in range(job.rows_total):
        segment_row(ctx, job.id, index)
    assert stitch_job(ctx, job.id) is True  # rows all done: stitches at once
    manifest = ctx.blobs.get_bytes(output_key(job.id, STITCH_MANIFEST))
    fetched = _fetch_log(ctx, monkeypatch)
    assert stitch_job(ctx, job.id) is True  # a rerun: already stitched
    assert not [k for k in fetched if "/rows/" in k]  # ... so it read no strip
    assert ctx.blobs.get_bytes(output_key(job.id, STITCH_MANIFEST)) == manifest


def test_reducer_stitches_itself_when_the_manifest_does_not_match_the_rows(
        streaming, micrograph, tmp_path, tiny_package):
    ctx = streaming
    job = _planned(ctx, micrograph)
    for index in range(job.rows_total):
        segment_row(ctx, job.id, index)
    assert stitch_job(ctx, job.id) is True
    # a stale manifest (say, of rows recomputed since) next to a wrong label map
    key = output_key(job.id, STITCH_MANIFEST)
    manifest = json.loads(ctx.blobs.get_bytes(key))
    manifest["rows"][1][1] = "0" * 64
    ctx.blobs.put_bytes(key, json.dumps(manifest).encode())
    ctx.blobs.put_bytes(output_key(job.id, LABELS), b"not a label map")
    reduce_job(ctx, job.id)
    done = ctx.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED and done.outputs["streamed"] is False
    labels, _ = reference_run(tmp_path, tiny_package, micrograph)
    assert np.array_equal(read_tiff(ctx.local_blob(output_key(job.id, LABELS))), labels)


def test_reducer_waits_only_while_the_stitcher_lease_is_live(streaming, micrograph):
    ctx = streaming
    job = _planned(ctx, micrograph)
    for index in range(job.rows_total):
        segment_row(ctx, job.id, index)
    rows = ctx.table.rows.list(job.id)
    job = ctx.table.jobs.get(job.id)
    assert wait_for_stitcher(ctx, job, rows) == Staged()  # no stitcher ever: no waiting

    naps: list[float] = []

    def stitcher_dies_after_three_naps(seconds):
        naps.append(seconds)
        if len(naps) == 3:
            ctx.table.stitch.release(job.id, "dying")  # as its lease running out would

    assert ctx.table.stitch.claim(job.id, "dying", lease_seconds=60)
    assert wait_for_stitcher(ctx, job, rows, sleep=stitcher_dies_after_three_naps).pictures is False
    assert len(naps) == 3

    naps.clear()

    def stitcher_finishes_after_two_naps(seconds):
        naps.append(seconds)
        if len(naps) == 2:
            assert stitch_job_as(ctx, job.id, "finishing")

    def stitch_job_as(ctx, job_id, holder):
        ctx.table.stitch.release(job_id, holder)
        return stitch_job(ctx, job_id)  # takes the freed lease, writes, releases

    assert ctx.table.stitch.claim(job.id, "finishing", lease_seconds=60)
    assert wait_for_stitcher(ctx, job, rows, sleep=stitcher_finishes_after_two_naps) == Staged(
        pictures=True, confidence=True)
    assert len(naps) == 2


def test_stitcher_gives_up_on_a_cancelled_job_and_stores_nothing(streaming, micrograph,
                                                                 monkeypatch):
    ctx = streaming
    job = _planned(ctx, micrograph)
    fetched = _fetch_log(ctx, monkeypatch)
    stitcher = _Stitcher(ctx, job.id)
    stitcher.start()
    assert segment_row(ctx, job.id, 0) == "done"
    wait_for(lambda: row_key(job.id, 0) in fetched, 30, "the stitcher to take row 0")
    assert ctx.table.jobs.transition(job.id, JobStatus.CANCELLED)
    stitcher.join(30)
    assert not stitcher.is_alive() and stitcher.result is False
    assert ctx.table.stitch.state(job.id)[1] is False  # released
    assert not any(ctx.blobs.exists(output_key(job.id, n)) for n in (*PICTURES, STITCH_MANIFEST))
    assert not list((ctx.cache_dir / "jobs" / job.id).glob("stitch-*"))


def test_pipeline_failure_stops_the_other_pipeline_waiting_for_rows(streaming, micrograph,
                                                                   monkeypatch):
    """The overlay fails on its first strip while the label map waits for row 1: the stitch
    ends at once (not when the last row comes) and the reducer is left to do the work."""
    from imaging import rendering
    from imaging.errors import ImageFormatError

    ctx = streaming
    job = _planned(ctx, micrograph)

    def broken_overlay(source, strips, palette, out, **options):
        raise ImageFormatError(f"{source}: cannot be read as an image: truncated")

    monkeypatch.setattr(rendering, "write_overlay", broken_overlay)
    assert segment_row(ctx, job.id, 0) == "done"
    stitcher = _Stitcher(ctx, job.id)
    stitcher.start()
    stitcher.join(30)
    assert not stitcher.is_alive(), "the stitch still waits for rows that never come"
    assert stitcher.result is False
    assert ctx.table.jobs.get(job.id).status == JobStatus.RUNNING  # the job is not failed
    assert not ctx.blobs.exists(output_key(job.id, STITCH_MANIFEST))
    assert ctx.table.stitch.state(job.id)[1] is False


def test_without_stream_reduce_no_stitcher_is_enqueued(stack, micrograph):
    job = _planned(stack, micrograph)
    assert [t for t, *_ in stack.sent] == [ROW_TASK] * job.rows_total


@pytest.mark.slow
def test_local_stack_runs_a_stitcher_worker_beside_the_row_worker(tmp_path, tiny_package,
                                                                  micrograph):
    """``pelletseg run``'s workers with streaming on: the row worker takes plan and rows, an
    extra threads-pool worker takes the reduce queue (stitcher and reducer at once); the
    job's pictures come from the stitcher and its label map is the uninterrupted run's."""
    import time

    from core.states import JOB_TERMINAL
    from queues.app import make_celery
    from storage.jobtable.engine import upgrade
    from submission import SubmissionService
    from tests.worker.conftest import make_settings
    from worker.context import WorkerContext
    from worker.local import LocalWorkers

    settings = make_settings(tmp_path / "home", stream_reduce=True, stitch_poll_seconds=0.05)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    ctx.models.publish(tiny_package)
    with LocalWorkers(settings, 1) as pool:
        job = (svc := SubmissionService(settings, app=make_celery(settings))).submit(svc.build_spec(str(micrograph)))
        deadline = time.monotonic() + 300
        while ctx.table.jobs.get(job.id).status not in JOB_TERMINAL:
            assert time.monotonic() < deadline, "job did not finish in 300 s"
            assert pool.alive() == 2
            time.sleep(0.2)
        argvs = [p.args for p in pool.procs]
    done = ctx.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.outputs["streamed"] is True
    queues = [a[a.index("-Q") + 1] for a in argvs]
    assert queues == ["plan,rows", "reduce"]
    assert argvs[1][argvs[1].index("--pool") + 1] == "threads"
    labels, fractions = reference_run(tmp_path, tiny_package, micrograph)
    assert np.array_equal(read_tiff(ctx.local_blob(output_key(job.id, LABELS))), labels)
    doc = json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert [c["pixels"] for c in doc["classes"]] == [c["pixels"] for c in fractions["classes"]]


@pytest.mark.slow
def test_a_solo_worker_that_also_takes_rows_refuses_to_stitch(tmp_path, tiny_package,
                                                             micrograph):
    """One solo worker on every queue (the image's default command) with streaming on: a
    stitcher there would wait for rows that only this worker could run, for ever. It refuses
    at once; the job succeeds through the reducer as without streaming."""
    import subprocess
    import time

    from core.states import JOB_TERMINAL
    from queues.app import make_celery
    from queues.names import QUEUES
    from storage.jobtable.engine import upgrade
    from submission import SubmissionService
    from tests.worker.conftest import make_settings
    from worker.context import WorkerContext
    from worker.local import worker_command

    settings = make_settings(tmp_path / "home", stream_reduce=True)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    ctx.models.publish(tiny_package)
    argv, env = worker_command(settings, list(QUEUES), "solo@%h")
    assert argv[argv.index("--pool") + 1] == "solo"
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        job = (svc := SubmissionService(settings, app=make_celery(settings))).submit(svc.build_spec(str(micrograph)))
        deadline = time.monotonic() + 300
        while ctx.table.jobs.get(job.id).status not in JOB_TERMINAL:
            assert time.monotonic() < deadline, "job did not finish in 300 s:\n" + log.read_text()
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
    done = ctx.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.outputs["streamed"] is False
    assert "stitch.refused" in log.read_text()
    assert ctx.table.stitch.state(job.id) == (None, False)  # it never took the lease
