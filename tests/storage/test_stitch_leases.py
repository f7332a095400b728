"""The streaming stitcher's lease on a job (storage/stitch_leases.py), SQLite and PostgreSQL:
one holder at a time, taken over only once expired, renewed only by its holder."""

from storage.spec import JobSpec
from storage.states import JobStatus


def _running_job(store):
    job = store.create_job(JobSpec(source_url="file:///x.tif", model="m"))
    assert store.transition_job(job.id, JobStatus.PLANNING)
    store.insert_rows(job.id, [(0, 10)])
    assert store.transition_job(job.id, JobStatus.RUNNING, width=7, height=10, rows_total=1)
    return job


def test_one_stitcher_holds_the_lease_until_it_releases_it(job_store):
    job = _running_job(job_store)
    assert job_store.stitch_state(job.id) == (None, False)  # never a stitcher
    assert job_store.claim_stitch(job.id, "s1", lease_seconds=60)
    assert not job_store.claim_stitch(job.id, "s2", lease_seconds=60)  # duplicate delivery
    assert job_store.stitch_state(job.id) == ("s1", True)
    assert job_store.extend_stitch(job.id, "s1", lease_seconds=60)
    assert not job_store.extend_stitch(job.id, "s2", lease_seconds=60)
    assert not job_store.release_stitch(job.id, "s2")
    assert job_store.release_stitch(job.id, "s1")
    assert job_store.stitch_state(job.id) == ("s1", False)
    assert not job_store.extend_stitch(job.id, "s1", lease_seconds=60)  # released: gone
    assert job_store.claim_stitch(job.id, "s2", lease_seconds=60)


def test_an_expired_stitch_lease_is_taken_over_and_its_holder_cannot_renew_it(job_store):
    job = _running_job(job_store)
    assert job_store.claim_stitch(job.id, "s1", lease_seconds=-1)  # already expired
    assert job_store.stitch_state(job.id) == ("s1", False)
    assert not job_store.extend_stitch(job.id, "s1", lease_seconds=60)
    assert job_store.claim_stitch(job.id, "s2", lease_seconds=60)
    assert job_store.stitch_state(job.id) == ("s2", True)


def test_no_stitch_lease_on_a_job_that_is_not_running_or_reducing(job_store):
    job = job_store.create_job(JobSpec(source_url="file:///x.tif", model="m"))
    assert not job_store.claim_stitch(job.id, "s1", lease_seconds=60)  # queued
    running = _running_job(job_store)
    assert job_store.transition_job(running.id, JobStatus.CANCELLED)
    assert not job_store.claim_stitch(running.id, "s1", lease_seconds=60)
    assert job_store.stitch_state("no-such-job") == (None, False)
