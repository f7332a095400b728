"""The streaming stitcher's lease on a job (storage/jobtable/stitch_leases.py), SQLite and PostgreSQL:
one holder at a time, taken over only once expired, renewed only by its holder."""

from core.spec import JobSpec
from core.states import JobStatus


def _running_job(store):
    job = store.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif", model="m"))
    assert store.jobs.transition(job.id, JobStatus.PLANNING)
    store.rows.insert(job.id, [(0, 10)])
    assert store.jobs.transition(job.id, JobStatus.RUNNING, width=7, height=10, rows_total=1)
    return job


def test_one_stitcher_holds_the_lease_until_it_releases_it(table):
    job = _running_job(table)
    assert table.stitch.state(job.id) == (None, False)  # never a stitcher
    assert table.stitch.claim(job.id, "s1", lease_seconds=60)
    assert not table.stitch.claim(job.id, "s2", lease_seconds=60)  # duplicate delivery
    assert table.stitch.state(job.id) == ("s1", True)
    assert table.stitch.extend(job.id, "s1", lease_seconds=60)
    assert not table.stitch.extend(job.id, "s2", lease_seconds=60)
    assert not table.stitch.release(job.id, "s2")
    assert table.stitch.release(job.id, "s1")
    assert table.stitch.state(job.id) == ("s1", False)
    assert not table.stitch.extend(job.id, "s1", lease_seconds=60)  # released: gone
    assert table.stitch.claim(job.id, "s2", lease_seconds=60)


def test_an_expired_stitch_lease_is_taken_over_and_its_holder_cannot_renew_it(table):
    job = _running_job(table)
    assert table.stitch.claim(job.id, "s1", lease_seconds=-1)  # already expired
    assert table.stitch.state(job.id) == ("s1", False)
    assert not table.stitch.extend(job.id, "s1", lease_seconds=60)
    assert table.stitch.claim(job.id, "s2", lease_seconds=60)
    assert table.stitch.state(job.id) == ("s2", True)


def test_no_stitch_lease_on_a_job_that_is_not_running_or_reducing(table):
    job = table.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif", model="m"))
    assert not table.stitch.claim(job.id, "s1", lease_seconds=60)  # queued
    running = _running_job(table)
    assert table.jobs.transition(running.id, JobStatus.CANCELLED)
    assert not table.stitch.claim(running.id, "s1", lease_seconds=60)
    assert table.stitch.state("no-such-job") == (None, False)
