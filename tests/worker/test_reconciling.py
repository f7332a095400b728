"""Leases: a working row keeps its lease; a dead worker's row goes back to pending and is
re-enqueued by the reconciler; after max attempts the row and its job fail with the reason."""

from __future__ import annotations

import time

from core.states import JobStatus, RowStatus
from queues.names import ROW_TASK
from storage.jobtable.tables import utcnow
from submission import SubmissionService
from worker.stages.planning import plan_job
from worker.stages.reconciling import reconcile
from worker.stages.segmenting import LeaseKeeper, segment_row


def _planned(stack, micrograph):
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    plan_job(stack, job.id)
    stack.sent.clear()
    return job


def test_dead_workers_row_is_requeued_and_then_done(stack, micrograph):
    job = _planned(stack, micrograph)
    # A worker claims row 2 and is SIGKILLed: its lease is never renewed and runs out.
    assert stack.table.rows.claim(job.id, 2, "dead-worker:1", lease_seconds=-1).claimed
    assert stack.table.rows.claim(job.id, 3, "live-worker:2", lease_seconds=600).claimed
    assert reconcile(stack) == [(job.id, 2)]
    assert stack.sent == [(ROW_TASK, job.id, 2)]
    row = stack.table.rows.get(job.id, 2)
    assert row.status == RowStatus.PENDING and "dead-worker:1" in row.error
    assert stack.table.rows.get(job.id, 3).status == RowStatus.RUNNING  # live lease untouched
    assert reconcile(stack) == []  # idempotent
    assert segment_row(stack, job.id, 2) == "done"
    assert stack.table.rows.get(job.id, 2).attempts == 2


def test_row_that_keeps_losing_its_worker_fails_the_job(stack, micrograph):
    job = _planned(stack, micrograph)
    for attempt in range(stack.settings.max_attempts):
        claim = stack.table.rows.claim(job.id, 0, f"w{attempt}", lease_seconds=-1)
        assert claim.claimed and claim.attempt == attempt + 1
        reconcile(stack)
    failed = stack.table.jobs.get(job.id)
    assert failed.status == JobStatus.FAILED
    assert "row 0 failed after 3 attempts" in failed.error and "lease expired" in failed.error
    assert stack.table.rows.get(job.id, 0).status == RowStatus.FAILED
    assert len(stack.sent) == stack.settings.max_attempts - 1


def test_lease_keeper_renews_while_the_row_runs_and_stops_after(stack, micrograph):
    job = _planned(stack, micrograph)
    stack.settings.lease_seconds = 1
    assert stack.table.rows.claim(job.id, 1, stack.worker_id, lease_seconds=1).claimed
    with LeaseKeeper(stack, job.id, 1) as keeper:
        time.sleep(2.2)  # longer than the lease: without renewals it would have expired
        assert stack.table.rows.get(job.id, 1).lease_expires_at > utcnow()
        assert reconcile(stack) == []
    assert keeper.renewals >= 3
    after = keeper.renewals
    time.sleep(1.2)
    assert keeper.renewals == after
    assert reconcile(stack) == [(job.id, 1)]  # no keeper any more: the lease runs out


def test_pending_row_whose_message_was_lost_is_enqueued_again(stack, micrograph):
    """A worker killed between delivery and claim: the row stays pending, its message hidden
    by the broker; after pending_timeout_seconds the reconciler enqueues it again, once."""
    job = _planned(stack, micrograph)
    stack.settings.pending_timeout_seconds = 1
    assert reconcile(stack) == []  # just enqueued by the planner: not lost yet
    for i in range(1, 6):  # every row but row 0 gets claimed and done
        assert segment_row(stack, job.id, i) == "done"
    stack.sent.clear()
    time.sleep(1.3)
    assert reconcile(stack) == [(job.id, 0)]
    assert stack.sent == [(ROW_TASK, job.id, 0)]
    assert reconcile(stack) == []  # enqueued again just now: no duplicate flood
    assert segment_row(stack, job.id, 0) == "done"
    assert stack.table.jobs.get(job.id).status == JobStatus.REDUCING


def test_same_row_delivered_twice_concurrently_counts_once(stack, micrograph):
    """Two workers get the same segment_row message at the same moment (at-least-once
    delivery): one checkpoint, one set of counts, the job finishes normally."""
    import threading

    from storage.blobs.layout import row_blob_keys

    job = _planned(stack, micrograph)
    results, barrier = [], threading.Barrier(2)

    def deliver():
        barrier.wait()
        results.append(segment_row(stack, job.id, 0))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) in (["done", "skipped:running"], ["done", "skipped:done"])
    row = stack.table.rows.get(job.id, 0)
    assert row.attempts == 1 and sum(row.counts) == (row.y1 - row.y0) * 700
    assert sorted(stack.blobs.list(f"jobs/{job.id}/rows")) == sorted(row_blob_keys(job.id, 0))
    assert stack.table.rows.progress(job.id).done == 1


def test_model_package_altered_in_the_store_fails_the_job_with_the_reason(stack, micrograph):
    job = _planned(stack, micrograph)
    done = stack.table.jobs.get(job.id)
    key = f"models/{done.model_name}/{done.model_version}/weights.safetensors"
    data = bytearray(stack.blobs.get_bytes(key))
    data[-1] ^= 0xFF  # one flipped bit in the stored weights
    stack.blobs.put_bytes(key, bytes(data))
    assert segment_row(stack, job.id, 0) == "failed"
    failed = stack.table.jobs.get(job.id)
    assert failed.status == JobStatus.FAILED
    assert "does not match" in failed.error and "weights.safetensors" in failed.error
