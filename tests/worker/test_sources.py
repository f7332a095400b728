"""A job reads the source its planner read: a new object at the same URL is read as itself,
and a source rewritten or replaced while its job runs fails the job instead of stitching rows
of two images (``outputs["source_identity"]``, worker/stages/sources.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import pyvips

from core.states import JobStatus, RowStatus
from queues.names import PLAN_TASK, ROW_TASK
from storage.blobs.layout import LABELS, SOURCE, output_key
from tests.worker.conftest import make_settings, read_tiff
from tests.worker.test_stages import _run_all, _submit
from worker.cache import job_folder, job_folders
from worker.stages.planning import plan_job
from worker.stages.segmenting import segment_row


def _other_image(micrograph, path):
    """Another pellet of the same size: the micrograph mirrored and inverted."""
    pyvips.Image.new_from_file(str(micrograph)).flip("horizontal").invert().pngsave(str(path))
    return path


def _tiled(image_path, path):
    """A tiled 8-bit RGB TIFF of ``image_path``: model-ready, so rows read it directly."""
    pyvips.Image.new_from_file(str(image_path)).tiffsave(str(path), tile=True, tile_width=128,
                                                          tile_height=128, compression="deflate")
    return path


def _labels(ctx, job):
    return read_tiff(ctx.local_blob(output_key(job.id, LABELS)))


@pytest.fixture
def s3_stack(tmp_path, tiny_package, s3_bucket):
    """The worker stack with its store on S3 (moto server); yields (ctx, bucket)."""
    import fsspec

    from storage.jobtable.engine import upgrade
    from worker.context import WorkerContext

    fsspec.filesystem("s3").invalidate_cache()
    settings = make_settings(tmp_path / "home", storage_url=f"s3://{s3_bucket}/pelletseg")
    upgrade(settings.resolved_database_url)
    sent: list[tuple] = []
    ctx = WorkerContext.from_settings(settings, lambda task, *args: sent.append((task, *args)))
    ctx.sent = sent
    ctx.models.publish(tiny_package)
    return ctx, s3_bucket


def test_a_new_object_at_the_same_url_is_segmented_as_itself(s3_stack, micrograph, tmp_path,
                                                             stack):
    """Before 2026-12-07 a worker kept every remote source it had downloaded under a name made
    of its URL alone: a pellet uploaded again to the same key was segmented as the earlier one,
    and the job succeeded. Each job's worker files go once it succeeds."""
    import boto3

    ctx, bucket = s3_stack
    other = _other_image(micrograph, tmp_path / "other.png")
    url = f"s3://{bucket}/lab/pellet.png"
    jobs = []
    for image in (micrograph, other):
        boto3.client("s3").upload_file(str(image), bucket, "lab/pellet.png")
        job = _submit(ctx, url)
        ctx.sent.append((PLAN_TASK, job.id))
        done = _run_all(ctx, job.id)
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert done.outputs["source_identity"]["size"] == image.stat().st_size
        assert job_folders(ctx.cache_dir, remote_store=True) == {}  # nothing left behind
        jobs.append(done)
    results = [_labels(ctx, job) for job in jobs]
    # the same images as local files, on a local stack: what each job should have said
    for image, labels in zip((micrograph, other), results, strict=True):
        job = _submit(stack, image)
        stack.sent.append((PLAN_TASK, job.id))
        assert _run_all(stack, job.id).status == JobStatus.SUCCEEDED
        np.testing.assert_array_equal(labels, _labels(stack, job))
    assert not np.array_equal(results[0], results[1])


def test_an_object_replaced_while_its_job_runs_fails_the_job(s3_stack, micrograph, tmp_path):
    """A model-ready source is read by each row's worker from its own copy: a worker that
    downloads it after the object was replaced would segment the other image into the same
    label map. The job fails saying so; the planner's machine, holding the planned copy, reads
    that one."""
    import boto3

    ctx, bucket = s3_stack
    first = _tiled(micrograph, tmp_path / "first.tif")
    second = _tiled(_other_image(micrograph, tmp_path / "other.png"), tmp_path / "second.tif")
    boto3.client("s3").upload_file(str(first), bucket, "lab/pellet.tif")
    job = _submit(ctx, f"s3://{bucket}/lab/pellet.tif")
    plan_job(ctx, job.id)
    planned = ctx.table.jobs.get(job.id)
    assert planned.status == JobStatus.RUNNING and planned.outputs["source"] is None  # read as is
    ctx.sent.clear()
    boto3.client("s3").upload_file(str(second), bucket, "lab/pellet.tif")
    segment_row(ctx, job.id, 0)  # the planner's machine: its copy is the planned file
    assert ctx.table.rows.get(job.id, 0).status == RowStatus.DONE
    # another worker (no copy of this job's source) takes the next row
    import shutil

    shutil.rmtree(job_folder(ctx.cache_dir, job.id))
    segment_row(ctx, job.id, 1)
    failed = ctx.table.jobs.get(job.id)
    assert failed.status == JobStatus.FAILED
    assert "changed since the job was planned" in failed.error
    assert f"s3://{bucket}/lab/pellet.tif" in failed.error and "pelletseg rerun" in failed.error
    assert not (job_folder(ctx.cache_dir, job.id) / "original").exists()  # nothing downloaded


def test_a_local_source_rewritten_before_a_resume_fails_and_the_earlier_file_resumes(
        stack, micrograph, tmp_path):
    """A local model-ready source rewritten between rows (a file exported again under the same
    name before ``pelletseg resume``) fails the job at the next row; the earlier file put back
    with its modification time (``cp -p``) lets the resume finish, with the labels of a job that
    never stopped."""
    source = _tiled(micrograph, tmp_path / "pellet.tif")
    kept = tmp_path / "kept.tif"
    kept.write_bytes(source.read_bytes())
    stat = source.stat()
    job = _submit(stack, source)
    plan_job(stack, job.id)
    assert stack.table.jobs.get(job.id).outputs["source_identity"]["size"] == stat.st_size
    stack.sent.clear()
    segment_row(stack, job.id, 0)
    _tiled(_other_image(micrograph, tmp_path / "other.png"), source)  # exported again
    segment_row(stack, job.id, 1)
    failed = stack.table.jobs.get(job.id)
    assert failed.status == JobStatus.FAILED
    assert "changed since the job was planned" in failed.error and "size" in failed.error
    assert "cp -p" in failed.error and str(source) in failed.error
    assert failed.error.startswith("row 1 failed after 1 attempt: ")  # the input's: not retried
    assert stack.table.rows.get(job.id, 1).status != RowStatus.DONE

    source.write_bytes(kept.read_bytes())
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    from submission import SubmissionService

    SubmissionService(stack.settings, table=stack.table).resume(job.id)
    pending = [r.index for r in stack.table.rows.list(job.id, [RowStatus.PENDING])]
    assert 0 not in pending and 1 in pending
    stack.sent[:] = [(ROW_TASK, job.id, i) for i in pending]
    done = _run_all(stack, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    fresh = _submit(stack, kept)
    stack.sent.append((PLAN_TASK, fresh.id))
    assert _run_all(stack, fresh.id).status == JobStatus.SUCCEEDED
    np.testing.assert_array_equal(_labels(stack, done), _labels(stack, fresh))


def test_jobs_planned_before_identities_were_recorded_are_read_as_before(stack, micrograph,
                                                                         tmp_path):
    """A job planned by an earlier worker has no ``source_identity``: its rows read the source
    unchecked, as they did."""
    source = _tiled(micrograph, tmp_path / "pellet.tif")
    job = _submit(stack, source)
    plan_job(stack, job.id)
    outputs = dict(stack.table.jobs.get(job.id).outputs)
    outputs.pop("source_identity")
    stack.table.jobs.set_outputs(job.id, outputs)
    os.utime(source, (1, 1))  # would fail a checked job
    done = _run_all(stack, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error


def test_a_remote_original_is_downloaded_once_per_job_and_checked(s3_bucket, micrograph, tmp_path,
                                                                   monkeypatch):
    """``localize`` on S3: one download per job and machine, its identity beside it; a copy
    without a readable identity is fetched again; an object replaced during the download is
    refused (which bytes came is unknown) and leaves nothing behind."""
    import boto3
    import fsspec

    from worker.cache import DOWNLOADS
    from worker.errors import SourceError
    from worker.stages.sources import localize

    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    s3 = boto3.client("s3")
    s3.upload_file(str(micrograph), s3_bucket, "p.png")
    url, cache, schemes = f"s3://{s3_bucket}/p.png", tmp_path / "cache", ["s3"]
    fetched = []
    get_file = fs.get_file

    def counting(*args, **kwargs):
        fetched.append(args[0])
        return get_file(*args, **kwargs)

    monkeypatch.setattr(fs, "get_file", counting)
    path, identity = localize(url, cache, "job-1", schemes)
    assert path.read_bytes() == micrograph.read_bytes() and len(fetched) == 1
    assert identity["size"] == micrograph.stat().st_size and identity["version"]
    assert path.parent == job_folder(cache, "job-1") / "original"
    assert localize(url, cache, "job-1", schemes, expected=identity) == (path, identity)
    assert len(fetched) == 1  # the job's copy
    (path.parent / "identity.json").write_text('{"size": ')  # a process died mid-write
    assert localize(url, cache, "job-1", schemes, expected=identity) == (path, identity)
    assert len(fetched) == 2

    def replaced_meanwhile(*args, **kwargs):
        get_file(*args, **kwargs)
        s3.put_object(Bucket=s3_bucket, Key="p.png", Body=b"another pellet")

    monkeypatch.setattr(fs, "get_file", replaced_meanwhile)
    with pytest.raises(SourceError, match="replaced while it was being downloaded"):
        localize(url, cache, "job-2", schemes)
    assert not job_folder(cache, "job-2").exists()
    assert list((cache / DOWNLOADS).iterdir()) == []


def test_a_planner_that_died_after_converting_converts_a_changed_source_again(
        stack, micrograph, tmp_path, monkeypatch):
    """A planner that stored the converted ``source.tif`` and died before the job ran leaves
    it behind; if the source is exported again before the planner's message is delivered
    again, the next attempt converts the file as it is now (before 2026-12-08 it reused the
    earlier conversion, and the job succeeded with the earlier pellet's labels under the new
    file's identity). With the source unchanged, the next attempt reuses the conversion."""
    import worker.stages.planning as planning

    source = tmp_path / "pellet.png"
    source.write_bytes(micrograph.read_bytes())
    job = _submit(stack, source)

    def killed(*args, **kwargs):
        raise RuntimeError("worker killed")

    with monkeypatch.context() as m:
        m.setattr(planning, "resolve_pixel_size", killed)
        with pytest.raises(RuntimeError):
            plan_job(stack, job.id)
    assert stack.table.jobs.get(job.id).status == JobStatus.PLANNING
    assert stack.blobs.exists(output_key(job.id, SOURCE))
    _other_image(micrograph, source)  # exported again under the same name

    conversions = []
    convert = planning.write_model_ready
    monkeypatch.setattr(planning, "write_model_ready",
                        lambda *a, **k: conversions.append(a) or convert(*a, **k))
    stack.sent[:] = [(PLAN_TASK, job.id)]
    done = _run_all(stack, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert len(conversions) == 1
    fresh = _submit(stack, _other_image(micrograph, tmp_path / "other.png"))
    stack.sent.append((PLAN_TASK, fresh.id))
    assert _run_all(stack, fresh.id).status == JobStatus.SUCCEEDED
    np.testing.assert_array_equal(_labels(stack, done), _labels(stack, fresh))
    earlier = _submit(stack, micrograph)
    stack.sent.append((PLAN_TASK, earlier.id))
    earlier = _run_all(stack, earlier.id)
    assert not np.array_equal(_labels(stack, done), _labels(stack, earlier))

    again = _submit(stack, source)  # unchanged between two attempts: converted once
    with monkeypatch.context() as m:
        m.setattr(planning, "resolve_pixel_size", killed)
        with pytest.raises(RuntimeError):
            plan_job(stack, again.id)
    converted = len(conversions)
    stack.sent[:] = [(PLAN_TASK, again.id)]
    assert _run_all(stack, again.id).status == JobStatus.SUCCEEDED
    assert len(conversions) == converted


def test_a_remote_key_with_a_hash_keeps_its_name_and_a_cut_file_url_says_why(
        s3_bucket, micrograph, tmp_path):
    """An object key with ``#`` (``pellet #3.png``: a laboratory's own numbering) is read by
    s3fs as written; its local copy keeps the name (before 2026-12-08 it was cut at the ``#``
    to ``pellet ``, and every message about it named that). A ``file://`` URL whose ``#`` cut
    its path short is refused saying so and how to write it."""
    import boto3
    import fsspec

    from worker.errors import SourceError
    from worker.stages.sources import localize

    fsspec.filesystem("s3").invalidate_cache()
    boto3.client("s3").upload_file(str(micrograph), s3_bucket, "runs/pellet #3.png")
    path, _ = localize(f"s3://{s3_bucket}/runs/pellet #3.png", tmp_path / "cache", "job-1",
                       ["s3"])
    assert path.name == "pellet #3.png"
    assert path.read_bytes() == micrograph.read_bytes()

    local = tmp_path / "pellet #3.png"
    local.write_bytes(micrograph.read_bytes())
    with pytest.raises(SourceError, match="write them as %23 and %3F") as e:
        localize(f"file://{local}", tmp_path / "cache", "job-2", ["file"])
    assert "no file at" in str(e.value)
    assert localize(local.as_uri(), tmp_path / "cache", "job-2", ["file"])[0] == local
