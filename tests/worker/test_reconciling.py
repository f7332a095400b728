"""Leases: a working row keeps its lease; a dead worker's row goes back to pending and is
re-enqueued by the reconciler; after max attempts the row and its job fail with the reason.
Retention: the reconciler deletes jobs that ended longer ago than ``retention_days``, and the
uploads of a local store older than that which no kept job reads."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

from sqlalchemy import update

from core.states import JobStatus, RowStatus
from queues.names import ROW_TASK
from storage.blobs import BlobStore, UploadStore
from storage.blobs.layout import LABELS, output_key, row_key
from storage.deletion import delete_job
from storage.errors import StorageError
from storage.jobtable.tables import Job, Row, utcnow
from submission import SubmissionService
from tests.conftest import local_upload
from worker.stages.planning import plan_job
from worker.stages.reconciling import expire_retained_jobs, expire_retained_uploads, reconcile
from worker.stages.reducing import reduce_job
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
    stack.settings.pending_timeout_seconds = 60
    assert reconcile(stack) == []  # just enqueued by the planner: not lost yet
    for i in range(1, stack.table.jobs.get(job.id).rows_total):  # every row but row 0 is done
        assert segment_row(stack, job.id, i) == "done"
    stack.sent.clear()
    with stack.table.engine.begin() as conn:  # the pending timeout passes (no sleep: a loaded
        # machine must not turn "just enqueued" into "lost")
        conn.execute(update(Row).where(Row.job_id == job.id)
                     .values(enqueued_at=utcnow() - timedelta(seconds=61)))
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


class _Depths:
    """A broker's queue depths for ``ctx.queue_depth``: records which queues were asked."""

    def __init__(self, **depths: int):
        self.depths, self.asked = {"plan": 0, "rows": 0, "reduce": 0, **depths}, []

    def __call__(self, logical: str) -> int:
        self.asked.append(logical)
        depth = self.depths[logical]
        if isinstance(depth, Exception):
            raise depth
        return depth


def test_pending_row_is_enqueued_again_after_the_grace_when_its_queue_is_empty(stack, micrograph):
    """A row's message hidden by a worker that stopped with a long poll in flight (SQS), with
    nothing waiting in the rows queue: enqueued again after lost_message_seconds, not after
    the 30-minute pending timeout; once per grace period."""
    job = _planned(stack, micrograph)
    stack.settings.lost_message_seconds = 0.5
    stack.queue_depth = depths = _Depths()
    assert reconcile(stack) == []  # just enqueued: the broker is not even asked
    assert depths.asked == []
    for i in range(1, stack.table.jobs.get(job.id).rows_total):
        assert segment_row(stack, job.id, i) == "done"
    stack.sent.clear()
    time.sleep(0.7)
    assert reconcile(stack) == [(job.id, 0)]
    assert stack.sent == [(ROW_TASK, job.id, 0)]
    assert depths.asked == ["rows"]
    assert reconcile(stack) == []  # marked enqueued now
    assert segment_row(stack, job.id, 0) == "done"


def test_pending_rows_behind_waiting_messages_wait_for_the_pending_timeout(stack, micrograph):
    """Messages wait in the rows queue: a pending row may simply be behind them, so only
    pending_timeout_seconds enqueues it again; without a broker (``queue_depth`` None), with
    the grace at 0 or with the broker away, nothing is enqueued early either."""
    job = _planned(stack, micrograph)
    stack.settings.lost_message_seconds = 0.2
    time.sleep(0.4)
    stack.queue_depth = depths = _Depths(rows=4)
    assert reconcile(stack) == [] and stack.sent == []
    assert depths.asked == ["rows"]
    stack.queue_depth = _Depths(rows=ConnectionError("broker away"))
    assert reconcile(stack) == [] and stack.sent == []
    stack.queue_depth = None
    assert reconcile(stack) == []
    stack.queue_depth, stack.settings.lost_message_seconds = _Depths(), 0
    assert reconcile(stack) == [] and stack.sent == []
    stack.settings.lost_message_seconds = 0.2
    assert stack.table.recovery.requeue_pending(0.2, peek=True) == [(job.id, 0)]  # any? one
    rows = stack.table.jobs.get(job.id).rows_total
    assert sorted(reconcile(stack)) == [(job.id, i) for i in range(rows)]  # peeking marked none


def test_unclaimed_planner_and_reducer_are_enqueued_again_when_their_queue_is_empty(
    stack, micrograph
):
    """A job left ``queued`` (its planner's message hidden) or ``reducing`` with no worker on
    its stage, its queue empty: the stage is enqueued again after the grace; a stage a worker
    has claimed is left alone."""
    from queues.names import PLAN_TASK, REDUCE_TASK

    spec = SubmissionService(stack.settings).build_spec(str(micrograph))
    queued = stack.table.jobs.create(spec)
    claimed = stack.table.jobs.create(spec)
    assert stack.table.jobs.claim_stage(claimed.id, [JobStatus.QUEUED], "live:1")
    reducing = _planned(stack, micrograph)
    for i in range(stack.table.jobs.get(reducing.id).rows_total):
        assert segment_row(stack, reducing.id, i) == "done"
    assert stack.table.jobs.get(reducing.id).status == JobStatus.REDUCING
    stack.sent.clear()
    stack.settings.lost_message_seconds = 0.3
    stack.queue_depth = depths = _Depths(reduce=1)
    time.sleep(0.5)
    assert reconcile(stack) == []
    assert stack.sent == [(PLAN_TASK, queued.id)]  # not the claimed job's planner
    assert depths.asked == ["plan", "reduce"]
    depths.depths["reduce"] = 0
    stack.sent.clear()
    time.sleep(0.5)
    reconcile(stack)
    assert stack.sent == [(PLAN_TASK, queued.id), (REDUCE_TASK, reducing.id)]


def _succeeded(stack, micrograph):
    job = _planned(stack, micrograph)
    for index in range(stack.table.jobs.get(job.id).rows_total):
        assert segment_row(stack, job.id, index) == "done"
    reduce_job(stack, job.id)
    assert stack.table.jobs.get(job.id).status == JobStatus.SUCCEEDED
    return job


def test_retention_deletes_jobs_that_ended_longer_ago_than_its_days(stack, micrograph):
    old, recent = _succeeded(stack, micrograph), _succeeded(stack, micrograph)
    running = _planned(stack, micrograph)
    with stack.table.engine.begin() as conn:  # ended 8 days ago; the running job is as old
        conn.execute(update(Job).where(Job.id.in_([old.id, running.id]))
                     .values(finished_at=utcnow() - timedelta(days=8)))
    outputs = stack.blobs.list(f"jobs/{old.id}")
    assert output_key(old.id, LABELS) in outputs and row_key(old.id, 0) in outputs
    assert expire_retained_jobs(stack) == []  # no retention set: nothing is deleted
    stack.settings.retention_days = 7
    reconcile(stack)
    assert stack.table.jobs.get(old.id).status == JobStatus.DELETED
    assert stack.blobs.list(f"jobs/{old.id}") == []
    assert stack.table.jobs.get(recent.id).status == JobStatus.SUCCEEDED  # 7 days not past
    assert stack.blobs.exists(output_key(recent.id, LABELS))
    assert stack.table.jobs.get(running.id).status == JobStatus.RUNNING  # never a live job
    assert expire_retained_jobs(stack) == []  # the next pass finds nothing left to do


def test_a_store_error_on_one_expired_job_does_not_stop_the_pass(stack, micrograph, monkeypatch):
    first, second = _succeeded(stack, micrograph), _succeeded(stack, micrograph)
    with stack.table.engine.begin() as conn:  # first ended before second; both past 7 days
        for job, days in ((first, 9), (second, 8)):
            conn.execute(update(Job).where(Job.id == job.id)
                         .values(finished_at=utcnow() - timedelta(days=days)))
    stack.settings.retention_days = 7
    real = stack.blobs.delete_prefix

    def refuse_the_first(prefix):
        if first.id in prefix:
            raise StorageError("AccessDenied (test)")
        return real(prefix)

    monkeypatch.setattr(stack.blobs, "delete_prefix", refuse_the_first)
    assert expire_retained_jobs(stack) == [second.id]  # the pass went on past the error
    assert stack.blobs.list(f"jobs/{second.id}") == []
    assert stack.table.jobs.get(first.id).status == JobStatus.DELETED  # its objects not yet
    assert stack.blobs.list(f"jobs/{first.id}")
    monkeypatch.setattr(stack.blobs, "delete_prefix", real)
    assert delete_job(stack.table, stack.blobs, first.id, lease_seconds=30).objects > 0
    assert stack.blobs.list(f"jobs/{first.id}") == []  # deleting again removed the rest


def test_retention_deletes_uploads_no_kept_job_reads(stack):
    uploads = UploadStore(stack.blobs, part_size=stack.settings.upload_part_bytes,
                          max_bytes=stack.settings.max_upload_bytes)
    service = SubmissionService(stack.settings)
    unread = local_upload(uploads, age_days=8)
    unfinished = local_upload(uploads, complete=False, age_days=8)
    recent = local_upload(uploads, age_days=6)
    read_by_kept, read_by_interrupted = local_upload(uploads, age_days=8), local_upload(
        uploads, age_days=8)
    jobs = {}
    for manifest, status in ((read_by_kept, JobStatus.SUCCEEDED),
                             (read_by_interrupted, JobStatus.INTERRUPTED)):
        jobs[manifest.id] = stack.table.jobs.create(service.build_spec(upload_id=manifest.id))
        with stack.table.engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == jobs[manifest.id].id)
                         .values(status=status.value, finished_at=utcnow()))
    every = {unread.id, unfinished.id, recent.id, read_by_kept.id, read_by_interrupted.id}
    assert set(uploads.ids()) == every
    assert expire_retained_uploads(stack) == []  # no retention set: nothing is deleted
    stack.settings.retention_days = 7
    reconcile(stack)
    assert set(uploads.ids()) == every - {unread.id, unfinished.id}
    assert stack.blobs.list(f"uploads/{unread.id}") == []
    assert stack.blobs.get_bytes(recent.key) == b"an uploaded pellet"  # 7 days not past
    # once the job that read it is deleted (by hand here; by retention 7 days after it
    # ended), the upload goes with the next sweep, at most an hour later
    delete_job(stack.table, stack.blobs, jobs[read_by_kept.id].id, lease_seconds=30)
    assert expire_retained_uploads(stack) == []  # swept less than an hour ago
    stack.uploads_swept_at -= 3600
    assert expire_retained_uploads(stack) == [read_by_kept.id]
    assert set(uploads.ids()) == {recent.id, read_by_interrupted.id}  # a resume needs that one


def test_a_store_error_on_one_expired_upload_does_not_stop_the_sweep(stack, monkeypatch):
    uploads = UploadStore(stack.blobs, part_size=stack.settings.upload_part_bytes,
                          max_bytes=stack.settings.max_upload_bytes)
    refused, deleted = (local_upload(uploads, age_days=8) for _ in range(2))
    real = UploadStore.abort

    def refuse_one(self, manifest):
        if manifest.id == refused.id:
            raise StorageError("Permission denied (test)")
        return real(self, manifest)

    monkeypatch.setattr(UploadStore, "abort", refuse_one)
    stack.settings.retention_days = 7
    assert expire_retained_uploads(stack) == [deleted.id]  # went on past the error
    assert uploads.ids() == [refused.id]


def test_uploads_on_s3_are_left_to_the_buckets_lifecycle_rule(stack, s3_bucket):
    on_s3 = dataclasses.replace(stack, blobs=BlobStore(f"s3://{s3_bucket}/store"))
    uploads = UploadStore(on_s3.blobs, part_size=stack.settings.upload_part_bytes,
                          max_bytes=stack.settings.max_upload_bytes)
    old = uploads.create("pellet.tif", 10).model_copy(
        update={"created_at": utcnow() - timedelta(days=30)})
    on_s3.blobs.put_bytes(f"uploads/{old.id}/.manifest.json", old.model_dump_json().encode())
    on_s3.settings.retention_days = 7
    assert uploads.ids() == [old.id]
    assert expire_retained_uploads(on_s3) == []  # the workers' role may not delete uploads/
    assert uploads.get(old.id).created_at == old.created_at
