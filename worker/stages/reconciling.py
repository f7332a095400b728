"""The reconciler: the job table, not the broker, decides what still has to run.

Run periodically by every worker process (``worker/liveness.py``, every
``PELLETSEG_RECONCILE_SECONDS``), by the ``pelletseg.reconcile`` task of a ``--beat`` worker, and
by ``pelletseg run``'s progress loop; concurrent passes are safe (conditional UPDATEs). It
gives back the rows and stages of workers whose heartbeat stopped (dead after three missed
beats: seconds, not a lease), returns rows whose lease
expired to ``pending`` and re-enqueues them, and re-enqueues rows left ``pending`` longer than
``pending_timeout_seconds`` after they were enqueued, so a row whose worker was SIGKILLed, or
whose message a broker lost, still gets done; after ``max_attempts`` the row and its job fail.
A job left ``reducing`` for ``reduce_timeout_seconds`` gets its reducer enqueued again, and a
job left ``queued`` or ``planning`` for ``pending_timeout_seconds`` its planner (the message
was lost, e.g. a broker restarted without persistence).

Those timeouts are long because a row may wait its turn behind other jobs' rows. When its
queue holds no waiting message, nothing is ahead of it: a row still ``pending``, or a planner
or reducer not yet claimed, ``lost_message_seconds`` (60 s) after it was enqueued has lost its
message, and it is enqueued again then (:func:`requeue_lost_messages`). On SQS a ``celery
worker`` stopped (SIGTERM: a scale-down, a spot reclaim) with a long poll in flight takes
the message that poll receives with it, hidden for the visibility timeout (an hour): without
this the row waited the 30-minute pending timeout. Duplicate messages are harmless:
claims are exclusive, a planner re-plans idempotently (rows are inserted once, the move to
``running`` is conditional) and a stage of a job past that stage is a no-op.

With ``PELLETSEG_RETENTION_DAYS`` it also deletes the jobs that ended longer ago than that
(:func:`expire_retained_jobs`) and, on a local store, the uploads older than that which no
kept job reads (:func:`expire_retained_uploads`).
"""

from __future__ import annotations

import time
from datetime import timedelta

import structlog

from core.states import JobStatus
from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK
from storage.blobs import UploadStore
from storage.deletion import delete_job, delete_upload
from storage.errors import NotFoundError, StorageError, TransitionError
from storage.jobtable.tables import utcnow
from worker.context import WorkerContext
from worker.stages.notifying import kick as kick_webhook
from worker.stages.notifying import sweep as sweep_webhooks

log = structlog.get_logger(__name__)


def reconcile(ctx: WorkerContext) -> list[tuple[str, int]]:
    """Expire stale leases, find pending rows whose message was lost, and (re-)enqueue them.

    Returns:
        ``(job_id, row index)`` of every row re-enqueued.

    Raises:
        StorageError: the job table is unreachable.
    """
    requeued = ctx.table.heartbeats.release_dead(ctx.settings.max_attempts)
    requeued += ctx.table.recovery.expire_leases(
        ctx.settings.max_attempts, ctx.settings.pending_timeout_seconds
    )
    for job_id, index in requeued:
        ctx.enqueue(ROW_TASK, job_id, index)
    if requeued:
        log.warning("reconcile.requeued", rows=len(requeued))
    settings = ctx.settings
    for job_id in ctx.table.heartbeats.dead_stages([JobStatus.PLANNING]):
        log.warning("reconcile.dead_planner", job_id=job_id)
        ctx.enqueue(PLAN_TASK, job_id)
    for job_id in ctx.table.heartbeats.dead_stages([JobStatus.REDUCING]):
        log.warning("reconcile.dead_reducer", job_id=job_id)
        ctx.enqueue(REDUCE_TASK, job_id)
    for job_id in ctx.table.recovery.stale_jobs([JobStatus.REDUCING], settings.reduce_timeout_seconds):
        log.warning("reconcile.reducer_requeued", job_id=job_id)
        ctx.enqueue(REDUCE_TASK, job_id)
    planning = [JobStatus.QUEUED, JobStatus.PLANNING]
    for job_id in ctx.table.recovery.stale_jobs(planning, settings.pending_timeout_seconds):
        log.warning("reconcile.planner_requeued", job_id=job_id)
        ctx.enqueue(PLAN_TASK, job_id)
    requeued += requeue_lost_messages(ctx)
    expire_retained_jobs(ctx)
    expire_retained_uploads(ctx)
    notified = sweep_webhooks(ctx)  # due webhook deliveries (retries, lost messages)
    if notified:
        log.info("reconcile.webhooks", jobs=len(notified))
    return requeued


#: Jobs a reconcile pass deletes at most for their retention period (the next pass goes on).
RETENTION_BATCH = 20


def expire_retained_jobs(ctx: WorkerContext) -> list[str]:
    """Delete the jobs that ended more than ``PELLETSEG_RETENTION_DAYS`` ago, oldest first
    and at most :data:`RETENTION_BATCH` per pass, as ``pelletseg delete`` does
    (:func:`storage.deletion.delete_job`: the job -> ``deleted``, every object under
    ``jobs/{id}/`` removed, the row kept; its webhook's ``deleted`` event sent). A job whose
    objects the store fails to remove is logged (``reconcile.retention_failed``, its id) and
    stays ``deleted`` with what is left, which deleting it again removes (``pelletseg delete
    JOB``); the pass goes on with the next job. Concurrent passes are safe.

    Returns:
        Ids of the jobs deleted.

    Raises:
        StorageError: the job table is unreachable.
    """
    days = ctx.settings.retention_days
    if not days:
        return []
    cutoff = utcnow() - timedelta(days=days)
    deleted = []
    for job_id in ctx.table.jobs.ended_before(cutoff, RETENTION_BATCH):
        try:
            gone = delete_job(ctx.table, ctx.blobs, job_id,
                              lease_seconds=ctx.settings.lease_seconds)
        except TransitionError:
            continue  # resumed, deleted or still finishing a row meanwhile
        except StorageError as e:
            log.warning("reconcile.retention_failed", job_id=job_id, error=str(e))
            continue
        kick_webhook(ctx, job_id)
        deleted.append(job_id)
        log.info("reconcile.retention_deleted", job_id=job_id, objects=gone.objects,
                 bytes=gone.bytes, retention_days=days)
    return deleted


#: Seconds between two retention sweeps of uploads by one process (each reads every upload's
#: manifest; retention is counted in days).
UPLOAD_SWEEP_SECONDS = 3600.0


def expire_retained_uploads(ctx: WorkerContext) -> list[str]:
    """Delete the uploads of a local store (``file://``) that are older than
    ``PELLETSEG_RETENTION_DAYS`` (finished: since completion; unfinished: since creation) and
    that no kept job reads: every job of one was deleted (by the same retention, once it
    ended that long ago, or by hand), or none was submitted. An upload that an interrupted
    job reads stays. At most :data:`RETENTION_BATCH` per sweep, a sweep at most every
    :data:`UPLOAD_SWEEP_SECONDS` per process; an upload the store fails to delete is logged
    (``reconcile.upload_retention_failed``) and the sweep goes on.

    On S3 the bucket's lifecycle rule expires uploads instead (terraform
    ``upload_expiration_days``, unfinished multipart uploads aborted), so workers need no
    permission to delete them: this sweep leaves S3 alone.

    Returns:
        Ids of the uploads deleted.

    Raises:
        StorageError: the job table is unreachable, or the store cannot be listed.
    """
    days = ctx.settings.retention_days
    now = time.monotonic()
    if not days or (ctx.uploads_swept_at is not None
                    and now - ctx.uploads_swept_at < UPLOAD_SWEEP_SECONDS):
        return []
    uploads = UploadStore(ctx.blobs, part_size=ctx.settings.upload_part_bytes,
                          max_bytes=ctx.settings.max_upload_bytes)
    if uploads.backend != "local":
        return []
    ctx.uploads_swept_at = now
    cutoff = utcnow() - timedelta(days=days)
    deleted: list[str] = []
    for upload_id in uploads.ids():
        if len(deleted) >= RETENTION_BATCH:
            break  # the next sweep goes on
        try:
            manifest = uploads.get(upload_id)
            if (manifest.completed_at or manifest.created_at) >= cutoff:
                continue
            gone = delete_upload(ctx.table, uploads, upload_id, keep_for=frozenset(JobStatus))
        except (NotFoundError, TransitionError):
            continue  # deleted meanwhile, or a job that reads it is kept
        except StorageError as e:
            log.warning("reconcile.upload_retention_failed", upload_id=upload_id, error=str(e))
            continue
        deleted.append(upload_id)
        log.info("reconcile.upload_retention_deleted", upload_id=upload_id,
                 objects=gone.objects, bytes=gone.bytes, retention_days=days)
    return deleted


def requeue_lost_messages(ctx: WorkerContext) -> list[tuple[str, int]]:
    """Enqueue again the rows ``pending``, and the planners and reducers unclaimed (job
    ``queued``/``planning``/``reducing`` with no ``stage_worker``), for longer than
    ``lost_message_seconds`` while their queue holds no waiting message (see the module
    docstring). Nothing happens without ``ctx.queue_depth`` (no broker) or with the setting
    at 0; the broker is asked only when the job table has such a row or stage, and a broker
    that does not answer is skipped until the next pass.

    Returns:
        ``(job_id, row index)`` of every row enqueued again (stages are logged).

    Raises:
        StorageError: the job table is unreachable.
    """
    grace = ctx.settings.lost_message_seconds
    if not grace or ctx.queue_depth is None:
        return []
    recovery = ctx.table.recovery

    def stage(statuses: list[JobStatus]):
        return lambda peek: [(job_id,) for job_id in recovery.stale_jobs(
            statuses, grace, unclaimed=True, peek=peek)]

    # (logical queue, task, lost(peek) -> the task's args of each lost message)
    checks = [
        ("rows", ROW_TASK, lambda peek: recovery.requeue_pending(grace, peek=peek)),
        ("plan", PLAN_TASK, stage([JobStatus.QUEUED, JobStatus.PLANNING])),
        ("reduce", REDUCE_TASK, stage([JobStatus.REDUCING])),
    ]
    rows: list[tuple[str, int]] = []
    for logical, task, lost in checks:
        if not lost(True):
            continue
        try:
            waiting = ctx.queue_depth(logical)
        except Exception as e:  # broker away: the next pass asks again
            log.warning("reconcile.queue_depth_failed", queue=logical, error=str(e))
            continue
        if waiting:
            continue  # the message may wait behind others: the timeouts decide
        for args in lost(False):
            ctx.enqueue(task, *args)
            if task == ROW_TASK:
                rows.append(args)
            log.warning("reconcile.lost_message", queue=logical, job_id=args[0],
                        row=args[1] if task == ROW_TASK else None, after_s=grace)
    return rows
