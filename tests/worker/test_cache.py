"""The worker's cache: a job's folders go once the job no longer runs, and nothing else does; a
full cache disk is the machine's fault, retried, never blamed on the source."""

from __future__ import annotations

import os
import time

import pytest

from core.states import JobStatus
from worker.cache import LIVE, download_path, job_folder, job_folders, sweep


def _fill(cache, job_id, remote=True):
    """A job's cached files as a worker leaves them: its original, a blob copy."""
    (job_folder(cache, job_id) / "original").mkdir(parents=True)
    (job_folder(cache, job_id) / "original" / "p.tif").write_bytes(b"x" * 10)
    if remote:
        (cache / "blobs" / "jobs" / job_id / "rows").mkdir(parents=True)
        (cache / "blobs" / "jobs" / job_id / "rows" / "00000.tif").write_bytes(b"y")


@pytest.mark.parametrize("remote", [True, False])
def test_sweep_removes_the_folders_of_jobs_that_no_longer_run(tmp_path, remote):
    cache = tmp_path / "cache"
    table = {f"job-{s.value}": s for s in JobStatus}
    for job_id in [*table, "job-unknown"]:
        _fill(cache, job_id, remote)
    model = cache / "blobs" / "models" / "tiny" / "1" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"w")
    asked = []

    def statuses(ids):
        asked.append(sorted(ids))
        return {i: table[i] for i in ids if i in table}

    removed = sweep(cache, remote, statuses)
    live = {f"job-{s.value}" for s in LIVE}
    assert set(removed) == {*table, "job-unknown"} - live
    assert asked == [sorted([*table, "job-unknown"])]  # one question to the table
    assert set(job_folders(cache, remote)) == live
    for job_id in live:  # a running job keeps every file
        assert (job_folder(cache, job_id) / "original" / "p.tif").read_bytes() == b"x" * 10
    assert model.read_bytes() == b"w"  # model packages stay
    assert sweep(cache, remote, statuses) == []


def test_a_local_stores_blobs_are_never_swept(tmp_path):
    """With a local store ``blobs/jobs`` is not the sweep's (a store rooted there would be the
    outputs themselves)."""
    cache = tmp_path / "cache"
    _fill(cache, "ended", remote=True)
    assert sweep(cache, False, lambda ids: {"ended": JobStatus.SUCCEEDED}) == ["ended"]
    assert (cache / "blobs" / "jobs" / "ended" / "rows" / "00000.tif").exists()
    assert not job_folder(cache, "ended").exists()


def test_partial_downloads_a_killed_worker_left_go_with_their_job(tmp_path):
    cache = tmp_path / "cache"
    ended, running = download_path(cache, "ended"), download_path(cache, "running")
    for part in (ended, running):
        part.write_bytes(b"half a pellet")
    assert download_path(cache, "ended").parent == ended.parent  # one folder, outside the jobs'
    statuses = {"ended": JobStatus.FAILED, "running": JobStatus.RUNNING}
    assert sweep(cache, True, lambda ids: {i: statuses[i] for i in ids}) == ["ended"]
    assert not ended.exists() and running.read_bytes() == b"half a pellet"


def test_an_unreachable_table_removes_nothing(tmp_path):
    from storage.errors import StorageError

    cache = tmp_path / "cache"
    _fill(cache, "a")

    def down(ids):
        raise StorageError("database is away")

    with pytest.raises(StorageError):
        sweep(cache, True, down)
    assert set(job_folders(cache, True)) == {"a"}


def test_the_liveness_thread_sweeps_the_cache(stack, micrograph, monkeypatch):
    """A worker process that reconciles sweeps too; its pool's children (beats only) do not."""
    from submission import SubmissionService
    from worker import liveness
    from worker.liveness import Liveness

    monkeypatch.setattr(liveness, "SWEEP_SECONDS", 0.0)
    stack.settings.heartbeat_seconds = 0.05
    spec = SubmissionService(stack.settings).build_spec(str(micrograph))
    ended, running = (stack.table.jobs.create(spec) for _ in range(2))
    stack.table.jobs.transition(ended.id, JobStatus.CANCELLED)
    for job in (ended, running):
        _fill(stack.cache_dir, job.id, remote=False)
    with Liveness(lambda: stack, beats_only=True) as child:
        deadline = time.monotonic() + 10
        while child.beats < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert child.sweeps == 0 and job_folder(stack.cache_dir, ended.id).exists()
    with Liveness(lambda: stack) as live:
        deadline = time.monotonic() + 10
        while job_folder(stack.cache_dir, ended.id).exists():
            assert time.monotonic() < deadline, "the ended job's files were never swept"
            time.sleep(0.02)
    assert live.sweeps >= 1
    assert (job_folder(stack.cache_dir, running.id) / "original" / "p.tif").exists()


def test_a_full_disk_at_planning_is_retried_not_blamed_on_the_source(stack, micrograph):
    """The planner's conversion into a full cache disk: the stage is tried again (another
    worker, or once space is freed), the job is not failed as a damaged image; with space it
    plans."""
    from queues.names import PLAN_TASK
    from submission import SubmissionService
    from worker.stages.guard import plan_guarded

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to make a disk that is full")
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    part = job_folder(stack.cache_dir, job.id) / "source.tif.part.tif"
    part.parent.mkdir(parents=True)
    os.symlink("/dev/full", part)  # every write there fails with ENOSPC
    assert plan_guarded(stack, job.id) is None
    attempt = stack.table.jobs.get(job.id)
    assert attempt.status == JobStatus.PLANNING and attempt.error is None
    assert stack.sent == [(PLAN_TASK, job.id)]  # enqueued again
    assert not part.exists()
    stack.sent.clear()
    assert plan_guarded(stack, job.id)  # rows enqueued
    assert stack.table.jobs.get(job.id).status == JobStatus.RUNNING


def test_a_download_into_a_full_disk_is_retried_not_blamed_on_the_source(tmp_path, monkeypatch):
    import errno

    import fsspec

    from imaging.errors import OutputWriteError
    from worker.errors import SourceError
    from worker.stages import sources

    class Store:
        def info(self, path):
            return {"size": 5, "ETag": '"abc"'}

        def invalidate_cache(self, path):
            pass

        def get_file(self, path, local):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsspec.core, "url_to_fs", lambda url: (Store(), url))
    with pytest.raises(OutputWriteError) as caught:
        sources.localize("s3://lab/p.tif", tmp_path / "cache", "job-1", ["s3"])
    assert not isinstance(caught.value, SourceError)  # SourceError fails the job for good
    assert caught.value.errno == errno.ENOSPC
    assert str(tmp_path / "cache") in str(caught.value) and "No space left" in str(caught.value)


def test_a_failed_write_is_described_as_the_workers_disk_in_one_line(tmp_path):
    """What a retried row or stage records (``worker.errors.describe``): libvips' log of a save
    into a full disk was stored as it came, over several lines ('unable to call pngsave\\n
    ...: write error\\nsystem error: No space left on device\\n...')."""
    import errno

    import pyvips

    from worker.errors import describe

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to make a disk that is full")
    target = tmp_path / "preview.png"
    os.symlink("/dev/full", target)
    with pytest.raises(pyvips.Error) as caught:
        pyvips.Image.black(64, 64).pngsave(str(target))
    text = describe(caught.value)
    assert "\n" not in text
    assert text.startswith(f"Error: {target} cannot be written (No space left on device): ")
    assert "the input is not at fault" in text and "PELLETSEG_CACHE_DIR" in text
    assert describe(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))).startswith(
        "OSError: a file cannot be written (No space left on device)")
    assert describe(RuntimeError("boom")) == "RuntimeError: boom"  # anything else as it was
    with pytest.raises(pyvips.Error) as caught:
        pyvips.Image.new_from_file(str(tmp_path / "missing.tif"))
    assert "\n" not in describe(caught.value) and "missing.tif" in describe(caught.value)
