"""Deleting an upload (``SubmissionService.delete_upload``, ``DELETE /v1/uploads/{id}``):
refused while a job that reads it has not ended (a resume re-reads the source), allowed once
its jobs ended (they keep their outputs); a rerun of such a job then says the upload is gone.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from core.states import JobStatus
from storage.blobs import output_key
from storage.errors import NotFoundError, TransitionError
from submission import SubmissionError
from tests.conftest import local_upload


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.REDUCING,
                                    JobStatus.INTERRUPTED])
def test_an_upload_a_job_still_needs_is_refused_and_kept(service, status, make_job):
    manifest = local_upload(service.uploads)
    done = make_job(JobStatus.SUCCEEDED, upload_id=manifest.id)
    needing = make_job(status, upload_id=manifest.id)
    with pytest.raises(TransitionError, match=f"{needing.id} \\({status.value}\\)") as refused:
        service.delete_upload(manifest.id)
    assert done.id not in str(refused.value)  # only the job that needs it is named
    assert service.blobs.get_bytes(manifest.key) == b"an uploaded pellet"
    assert service.uploads.get(manifest.id).completed_at is not None


def test_an_upload_whose_jobs_ended_goes_and_their_outputs_stay(service, make_job):
    manifest = local_upload(service.uploads)
    jobs = [make_job(s, upload_id=manifest.id) for s in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                     JobStatus.CANCELLED)]
    other = local_upload(service.uploads, b"another pellet")
    objects, size = service.blobs.usage(f"uploads/{manifest.id}")
    assert objects == 2 and size > len(b"an uploaded pellet")  # the file and its manifest
    gone = service.delete_upload(manifest.id)
    assert (gone.upload_id, gone.objects, gone.bytes) == (manifest.id, objects, size)
    assert service.blobs.list(f"uploads/{manifest.id}") == []
    with pytest.raises(NotFoundError):
        service.uploads.get(manifest.id)
    with pytest.raises(NotFoundError):
        service.delete_upload(manifest.id)
    for job in jobs:  # their outputs are theirs
        assert service.blobs.exists(output_key(job.id, "labels.tif"))
    assert service.blobs.get_bytes(other.key) == b"another pellet"  # another upload untouched
    with pytest.raises(SubmissionError, match=f"was upload {manifest.id}, which has been "
                                              "deleted .* upload the image again"):
        service.rerun(jobs[0].id)


def test_an_unfinished_upload_goes_with_its_parts(service):
    manifest = local_upload(service.uploads, complete=False)
    assert service.blobs.list(f"uploads/{manifest.id}/.parts")
    service.delete_upload(manifest.id)
    assert service.blobs.list(f"uploads/{manifest.id}") == []


def test_a_deleted_job_does_not_hold_its_upload(service, make_job):
    manifest = local_upload(service.uploads)
    job = make_job(JobStatus.SUCCEEDED, upload_id=manifest.id)
    assert service.table.jobs.reading(service.uploads.source_url(manifest)) == [
        (job.id, JobStatus.SUCCEEDED)]
    service.delete(job.id)
    assert service.table.jobs.reading(service.uploads.source_url(manifest)) == []
    service.delete_upload(manifest.id)
    assert service.blobs.list(f"uploads/{manifest.id}") == []


def test_an_upload_source_maps_back_to_its_key_and_no_other_does(service, image):
    manifest = local_upload(service.uploads)
    assert service.uploads.key_of(service.uploads.source_url(manifest)) == manifest.key
    assert service.uploads.key_of(image.as_uri()) is None
    assert service.uploads.key_of(service.blobs.url(f"jobs/{manifest.id}/source.tif")) is None


def test_a_job_submitted_while_its_upload_is_deleted_is_refused_not_run(service):
    """The deletion marks the upload before it looks for jobs that read it; a submission looks
    for the mark after the job's row exists. Here the submission's look comes after the mark
    (the deletion's own look, which would see the job, is still to come)."""
    manifest = local_upload(service.uploads)
    spec = service.build_spec(upload_id=manifest.id)  # checked before the deletion began
    service.uploads.mark_deleting(manifest.id)
    assert service.uploads.deleting(manifest.id)
    with pytest.raises(SubmissionError, match=f"upload_id '{manifest.id}': the upload is being "
                                              "deleted .*upload the image again"):
        service.submit(spec)
    [(job_id, status)] = service.table.jobs.reading(service.uploads.source_url(manifest))
    job = service.table.jobs.get(job_id)
    assert status == job.status == JobStatus.FAILED and job.started_at is None
    assert f"upload {manifest.id}: the upload is being deleted" in job.error
    with pytest.raises(SubmissionError, match="is being deleted"):  # new requests: at once
        service.build_spec(upload_id=manifest.id)
    service.delete_upload(manifest.id)  # the failed job does not hold it
    assert service.blobs.list(f"uploads/{manifest.id}") == []


def test_a_deletion_that_finds_a_new_job_is_refused_and_unmarks_the_upload(service):
    """The other order: the job's row exists before the deletion looks, so the deletion sees
    it, is refused, and removes its mark; the upload serves new jobs again."""
    manifest = local_upload(service.uploads)
    job = service.submit(service.build_spec(upload_id=manifest.id))
    assert service.table.jobs.get(job.id).status == JobStatus.QUEUED
    with pytest.raises(TransitionError, match=f"{job.id} \\(queued\\)"):
        service.delete_upload(manifest.id)
    assert not service.uploads.deleting(manifest.id)
    again = service.submit(service.build_spec(upload_id=manifest.id))
    assert service.table.jobs.get(again.id).status == JobStatus.QUEUED


def test_a_deletion_whose_check_fails_leaves_no_mark(service, monkeypatch):
    import storage.deletion as deletion
    from storage.errors import StorageError

    manifest = local_upload(service.uploads)

    def unreachable(*_):
        raise StorageError("job table unreachable")

    monkeypatch.setattr(deletion, "upload_readers", unreachable)
    with pytest.raises(StorageError, match="unreachable"):
        service.delete_upload(manifest.id)
    assert not service.uploads.deleting(manifest.id)
    assert service.blobs.get_bytes(manifest.key) == b"an uploaded pellet"


def test_the_mark_written_by_another_process_is_seen_on_s3(s3_bucket):
    """An S3 store's listings are cached per process (s3fs): the API process that submits
    must see a mark another process (another API replica) wrote after that listing."""
    import boto3

    from storage.blobs import BlobStore, UploadStore

    uploads = UploadStore(BlobStore(f"s3://{s3_bucket}/store"), part_size=5 * 2**20,
                          max_bytes=2**30)
    manifest = uploads.create("pellet.tif", 10)
    folder = uploads.blobs.path(f"uploads/{manifest.id}")
    assert not uploads.deleting(manifest.id)
    assert len(uploads.blobs.fs.ls(folder)) == 1  # the manifest, now listed in the cache
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"store/uploads/{manifest.id}/.deleting",
                                  Body=b"2026-12-07T03:30:00")
    assert uploads.deleting(manifest.id)
    uploads.unmark_deleting(manifest.id)
    assert not uploads.deleting(manifest.id)


def test_a_job_submitted_after_its_upload_was_deleted_is_refused_at_once(service):
    """The deletion ran whole between the request's checks and the job's row: the submission
    finds the upload gone instead of leaving the job to fail at planning."""
    manifest = local_upload(service.uploads)
    spec = service.build_spec(upload_id=manifest.id)
    service.delete_upload(manifest.id)
    with pytest.raises(SubmissionError, match="has been deleted"):
        service.submit(spec)
    [(_, status)] = service.table.jobs.reading(spec.source_url)
    assert status == JobStatus.FAILED
    # a folder under uploads/ not named by an upload id is no upload: not checked as one
    assert service.uploads.id_of(service.blobs.url("uploads/u1/p.tif")) is None
    assert service.uploads.id_of(spec.source_url) == manifest.id
