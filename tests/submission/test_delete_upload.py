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
