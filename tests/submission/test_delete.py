"""Deleting jobs (``SubmissionService.delete`` / ``delete_batch``): only what has ended or was
interrupted, never under a live lease; every object under ``jobs/{id}/`` removed and nothing
else; the job kept as a ``deleted`` record, hidden from listings unless asked for, with no way
out of ``deleted``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from core.states import JobStatus
from storage.blobs import row_key
from storage.errors import NotFoundError, TransitionError
from storage.jobtable.tables import Row, utcnow


def _keys(service, job_id):
    return service.blobs.list(f"jobs/{job_id}")


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                                    JobStatus.INTERRUPTED])
def test_an_ended_job_loses_every_object_under_its_prefix_and_nothing_else(
        service, image, status, make_job):
    job, other = make_job(status), make_job(JobStatus.SUCCEEDED)
    before = _keys(service, other.id)
    deletion = service.delete(job.id)
    assert deletion.job.status == JobStatus.DELETED
    assert (deletion.objects, deletion.bytes) == (3, 2 * 500 + 1000)
    assert _keys(service, job.id) == []
    assert not Path(service.blobs.path(f"jobs/{job.id}")).exists()  # its folders too
    assert _keys(service, other.id) == before  # another job's objects untouched
    assert image.read_bytes() == b"the user's own file"  # the source is the user's
    record = service.table.jobs.get(job.id)  # the record stays, rows included
    assert record.status == JobStatus.DELETED and record.source_url == job.source_url
    assert len(service.table.rows.list(job.id)) == 2


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.PLANNING, JobStatus.RUNNING,
                                    JobStatus.REDUCING])
def test_a_job_that_has_not_ended_is_refused_and_keeps_everything(service, image, status, make_job):
    job = make_job(status)
    with pytest.raises(TransitionError, match=f"is {status.value}; .* cancel it first"):
        service.delete(job.id)
    assert service.table.jobs.get(job.id).status == status
    assert len(_keys(service, job.id)) == 3


def test_a_row_still_leased_on_a_worker_holds_the_deletion_back(service, image, make_job):
    job = make_job(JobStatus.RUNNING)
    claim = service.table.rows.claim(job.id, 0, "w1", lease_seconds=600)
    assert claim
    service.cancel(job.id)  # cancelled, but row 0 may still store its checkpoint
    with pytest.raises(TransitionError, match="1 row\\(s\\) or its stitcher on workers"):
        service.delete(job.id)
    assert service.table.jobs.get(job.id).status == JobStatus.CANCELLED
    assert len(_keys(service, job.id)) == 3
    with service.table.engine.begin() as conn:  # the lease runs out
        conn.execute(update(Row).where(Row.job_id == job.id)
                     .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert service.delete(job.id).job.status == JobStatus.DELETED


def test_deleting_again_removes_what_a_late_writer_stored_and_nothing_leaves_deleted(
        service, image, make_job):
    job = make_job(JobStatus.FAILED)
    service.delete(job.id)
    service.blobs.put_bytes(row_key(job.id, 1), b"late")  # a row that ended after the delete
    again = service.delete(job.id)
    assert (again.objects, again.bytes) == (1, 4) and _keys(service, job.id) == []
    assert service.delete(job.id).objects == 0
    with pytest.raises(TransitionError, match="is deleted"):
        service.resume(job.id)
    with pytest.raises(TransitionError, match="is deleted"):
        service.cancel(job.id)
    for target in JobStatus:
        if target != JobStatus.DELETED:
            assert not service.table.jobs.transition(job.id, target)
    with pytest.raises(NotFoundError):
        service.delete("no-such-job")


def test_listings_hide_deleted_jobs_unless_asked_for(service, image, make_job):
    kept, gone = make_job(JobStatus.SUCCEEDED), make_job(
                                                                 JobStatus.SUCCEEDED)
    service.delete(gone.id)
    assert [j.id for j in service.table.jobs.list()] == [kept.id]
    assert [j.id for j in service.table.jobs.list(status=JobStatus.DELETED)] == [gone.id]
    assert {j.id for j in service.table.jobs.list(with_deleted=True)} == {kept.id, gone.id}


def test_a_batch_deletes_its_ended_jobs_and_leaves_the_running_one(service, image, make_job):
    jobs = [make_job(s, batch_id="b-1") for s in
            (JobStatus.SUCCEEDED, JobStatus.RUNNING, JobStatus.INTERRUPTED)]
    deleted = service.delete_batch("b-1")
    assert [d.job.id for d in deleted] == [jobs[0].id, jobs[2].id]
    assert [service.table.jobs.get(j.id).status for j in jobs] == [
        JobStatus.DELETED, JobStatus.RUNNING, JobStatus.DELETED]
    assert len(_keys(service, jobs[1].id)) == 3
    with pytest.raises(TransitionError, match=r"no job to delete: .* \(2 deleted, 1 running\)"):
        service.delete_batch("b-1")
    with pytest.raises(NotFoundError):
        service.delete_batch("no-such-batch")


def test_the_webhook_is_told_of_the_deletion(service, image, make_job):
    job = make_job(JobStatus.SUCCEEDED, webhook_url="http://127.0.0.1:9/hook")
    service.delete(job.id)
    record = service.table.jobs.get(job.id)
    assert (record.webhook_event, record.webhook_status) == ("deleted", "pending")
