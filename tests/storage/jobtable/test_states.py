"""The state machines and their enforcement by conditional UPDATEs (SQLite and PostgreSQL)."""

import threading

import pytest

from core.spec import JobSpec
from core.states import JOB_TRANSITIONS, JobStatus, RowStatus
from storage.errors import NotFoundError, StorageError


def _job(store, rows=3):
    job = store.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif", model="m"))
    assert store.jobs.transition(job.id, JobStatus.PLANNING)
    store.rows.insert(job.id, [(i * 10, i * 10 + 10) for i in range(rows)])
    assert store.jobs.transition(job.id, JobStatus.RUNNING, width=7, height=rows * 10, rows_total=rows)
    return job


def test_job_transitions_follow_the_table(table):
    job = table.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif", model="m"))
    assert job.status == JobStatus.QUEUED
    assert not table.jobs.transition(job.id, JobStatus.SUCCEEDED)  # queued -> succeeded: no
    assert not table.jobs.transition(job.id, JobStatus.REDUCING)
    assert table.jobs.transition(job.id, JobStatus.PLANNING)
    assert not table.jobs.transition(job.id, JobStatus.PLANNING)  # duplicate: no effect
    assert table.jobs.transition(job.id, JobStatus.FAILED, error="boom")
    failed = table.jobs.get(job.id)
    assert failed.status == JobStatus.FAILED and failed.error == "boom" and failed.finished_at
    assert table.jobs.transition(job.id, JobStatus.RUNNING)  # resume
    assert table.jobs.get(job.id).error is None


def test_terminal_success_is_final_but_for_deletion_and_deleted_is_final():
    for target, sources in JOB_TRANSITIONS.items():
        assert JobStatus.DELETED not in sources, target
        if target != JobStatus.DELETED:
            assert JobStatus.SUCCEEDED not in sources, target
    # only what nothing runs may be deleted
    assert JOB_TRANSITIONS[JobStatus.DELETED] == {
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}


def test_claim_is_exclusive_and_done_rows_are_skipped(table):
    job = _job(table)
    first = table.rows.claim(job.id, 0, "w1", lease_seconds=60)
    second = table.rows.claim(job.id, 0, "w2", lease_seconds=60)
    assert first.claimed and first.attempt == 1
    assert not second.claimed and second.status == RowStatus.RUNNING
    assert table.rows.complete(job.id, 0, counts=[3, 4], checksum="c", blob_key="k", seconds=1) == (True, False)
    again = table.rows.claim(job.id, 0, "w2", lease_seconds=60)
    assert not again.claimed and again.status == RowStatus.DONE


def test_expired_lease_can_be_taken_over(table):
    job = _job(table)
    assert table.rows.claim(job.id, 1, "w1", lease_seconds=-1).claimed  # already expired
    takeover = table.rows.claim(job.id, 1, "w2", lease_seconds=60)
    assert takeover.claimed and takeover.attempt == 2
    assert table.rows.get(job.id, 1).worker == "w2"


def test_duplicate_completion_counts_once_and_last_row_triggers_reduce_once(table):
    job = _job(table, rows=2)
    for i in range(2):
        assert table.rows.claim(job.id, i, "w", 60).claimed
    assert table.rows.complete(job.id, 0, counts=[5, 2], checksum="a", blob_key="a", seconds=1) == (True, False)
    assert table.rows.complete(job.id, 0, counts=[5, 2], checksum="a", blob_key="a", seconds=1) == (False, False)
    assert table.rows.complete(job.id, 1, counts=[1, 6], checksum="b", blob_key="b", seconds=1) == (True, True)
    assert table.rows.complete(job.id, 1, counts=[1, 6], checksum="b", blob_key="b", seconds=1) == (False, False)
    assert table.jobs.get(job.id).status == JobStatus.REDUCING
    assert table.rows.class_counts(job.id, 2) == [6, 8]
    prog = table.rows.progress(job.id)
    assert (prog.done, prog.total, prog.pixels_done) == (2, 2, 20 * 7)


def test_concurrent_completions_trigger_reduce_exactly_once(table):
    """Many threads finish the rows of one job at once; exactly one is told to reduce."""
    n = 12
    job = _job(table, rows=n)
    for i in range(n):
        assert table.rows.claim(job.id, i, "w", 60).claimed
    results = []
    barrier = threading.Barrier(n)

    def finish(i):
        barrier.wait()
        results.append(table.rows.complete(job.id, i, counts=[1], checksum="x", blob_key="k", seconds=0))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(True, False)] * (n - 1) + [(True, True)]
    assert table.jobs.get(job.id).status == JobStatus.REDUCING


def test_failures_retry_then_fail_the_job(table):
    job = _job(table)
    assert table.rows.claim(job.id, 2, "w", 60).claimed
    assert table.rows.fail(job.id, 2, "oom", max_attempts=2) == RowStatus.PENDING
    assert table.rows.claim(job.id, 2, "w", 60).attempt == 2
    assert table.rows.fail(job.id, 2, "oom again", max_attempts=2) == RowStatus.FAILED
    failed = table.jobs.get(job.id)
    assert failed.status == JobStatus.FAILED and "row 2" in failed.error and "oom again" in failed.error
    assert table.recovery.reset_rows_for_resume(job.id) == [0, 1, 2]
    assert table.rows.get(job.id, 2).status == RowStatus.PENDING


def test_idempotency_key_returns_existing_job(table):
    spec = JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif", model="m")
    a = table.jobs.create(spec, idempotency_key="sample-17")
    b = table.jobs.create(spec, idempotency_key="sample-17")
    assert a.id == b.id
    assert len(table.jobs.list()) == 1


def test_missing_records_raise(table):
    with pytest.raises(NotFoundError):
        table.jobs.get("nope")
    with pytest.raises(NotFoundError, match="not registered"):
        table.models.get("nope")


def test_model_registry_rejects_changed_weights(table):
    kw = dict(name="m", version="1", architecture="Unet", encoder="resnet18", classes=[])
    assert table.models.register(sha256="a" * 64, **kw)
    assert not table.models.register(sha256="a" * 64, **kw)
    with pytest.raises(StorageError, match="already registered"):
        table.models.register(sha256="b" * 64, **kw)
    assert table.models.get("m").sha256 == "a" * 64


def test_expired_leases_go_back_to_pending_then_fail_the_job(table):
    job = _job(table, rows=2)
    assert table.rows.claim(job.id, 0, "dead", lease_seconds=-1).claimed
    assert table.rows.claim(job.id, 1, "alive", lease_seconds=60).claimed
    assert table.recovery.expire_leases(max_attempts=2) == [(job.id, 0)]
    assert table.rows.get(job.id, 0).status == RowStatus.PENDING
    assert table.rows.get(job.id, 1).status == RowStatus.RUNNING
    assert table.rows.claim(job.id, 0, "dead-again", lease_seconds=-1).attempt == 2
    assert table.recovery.expire_leases(max_attempts=2) == []  # second loss: out of attempts
    assert table.rows.get(job.id, 0).status == RowStatus.FAILED
    failed = table.jobs.get(job.id)
    assert failed.status == JobStatus.FAILED and "dead-again" in failed.error


def test_job_statuses_of_many_ids_at_once(table):
    """What the worker's cache sweep asks (``worker.cache.sweep``): unknown ids left out, past
    one query's 500 ids."""
    jobs = [table.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif",
                                      model="m")) for _ in range(3)]
    assert table.jobs.transition(jobs[1].id, JobStatus.CANCELLED)
    found = table.jobs.statuses([j.id for j in jobs] + ["no-such-job"])
    assert found == {jobs[0].id: JobStatus.QUEUED, jobs[1].id: JobStatus.CANCELLED,
                     jobs[2].id: JobStatus.QUEUED}
    many = table.jobs.statuses([f"x{i}" for i in range(1200)] + [jobs[2].id])
    assert many == {jobs[2].id: JobStatus.QUEUED}
    assert table.jobs.statuses([]) == {}
