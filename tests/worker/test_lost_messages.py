"""A message received and never settled (what a ``celery worker`` stopped by SIGTERM with an
SQS long poll in flight leaves behind, hidden for the queue's visibility timeout of an hour):
the workers' own reconcile pass enqueues its row again once ``lost_message_seconds`` have
passed with nothing waiting in the queue, and the job succeeds, on a real worker over the moto
SQS server."""

from __future__ import annotations

import boto3
import pytest

from core.states import JOB_TERMINAL, JobStatus, RowStatus
from queues.names import queue_name
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.conftest import wait_for
from tests.worker.conftest import sqs_settings
from worker.context import WorkerContext
from worker.local import LocalWorkers
from worker.stages.planning import plan_job
from worker.tasks import make_worker_app


@pytest.mark.slow
def test_row_whose_message_a_stopped_worker_hid_is_done_after_the_grace(
    tmp_path, moto_endpoint, tiny_package, broker_cleanup, micrograph
):
    settings = sqs_settings(tmp_path / "home", moto_endpoint, lost_message_seconds=2,
                            reconcile_seconds=0.5)
    broker_cleanup(settings)
    upgrade(settings.resolved_database_url)
    app = make_worker_app(settings)
    ctx = WorkerContext.on_broker(settings, app)
    ctx.models.publish(tiny_package)
    job = ctx.table.jobs.create(SubmissionService(settings).build_spec(str(micrograph)))
    rows = plan_job(ctx, job.id)  # its row messages are in the rows queue now
    assert len(rows) == 6
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=queue_name(settings, "rows"))["QueueUrl"]
    # The stopped worker's last long poll: one message received, never deleted nor released.
    hidden = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]
    assert len(hidden) == 1
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"  # hidden for an hour

    with LocalWorkers(settings, 1):  # a real `celery worker`: its liveness thread reconciles
        done = wait_for(lambda: (j := ctx.table.jobs.get(job.id)).status in JOB_TERMINAL and j,
                        90, lambda: _state("the job did not end", ctx, job.id))
    assert done.status == JobStatus.SUCCEEDED, done.error
    rows = ctx.table.rows.list(job.id)
    assert {r.status for r in rows} == {RowStatus.DONE}
    assert [r.attempts for r in rows] == [1] * 6  # the hidden row was run once, not failed


def _state(what: str, ctx, job_id: str) -> str:
    job = ctx.table.jobs.get(job_id)
    rows = [(r.index, str(r.status), r.attempts) for r in ctx.table.rows.list(job_id)]
    return f"{what}: job {job.status} ({job.error}), rows {rows}"
