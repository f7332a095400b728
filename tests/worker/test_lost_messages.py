"""A row's message the broker will not deliver, though the job table waits for its row: on SQS
received and never settled (what a ``celery worker`` stopped by SIGTERM with a long poll in
flight leaves behind, hidden for the queue's visibility timeout of an hour), on the embedded
broker taken and never acknowledged (a worker killed between its receive and its claim), on
Redis gone from the list (a broker restart without persistence), on RabbitMQ acknowledged by
mistake. The workers' own reconcile pass enqueues the row again once ``lost_message_seconds``
have passed with nothing waiting in the queue, and the job succeeds: a real ``celery worker``
process (``worker.local.LocalWorkers``; in-process test workers run no liveness thread) on
each broker, so each broker's count of waiting messages is shown to leave the lost one out."""

from __future__ import annotations

import pytest

from core.states import JOB_TERMINAL, JobStatus, RowStatus
from queues.names import queue_name
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.conftest import port_open, wait_for
from tests.worker.conftest import job_state, make_settings, sqs_settings, unique_prefix
from worker.context import WorkerContext
from worker.local import LocalWorkers
from worker.stages.planning import plan_job
from worker.tasks import make_worker_app

FAST = dict(lost_message_seconds=2, reconcile_seconds=0.5)


def _settings(broker: str, home, request):
    if broker == "sqs":
        return sqs_settings(home, request.getfixturevalue("moto_endpoint"), **FAST)
    if broker == "redis":
        return make_settings(home, broker_url=request.getfixturevalue("redis_url"),
                             queue_prefix=unique_prefix(), **FAST)
    if broker == "rabbitmq":
        if not port_open(5672):
            pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
        return make_settings(home, broker_url="amqp://guest:guest@127.0.0.1:5672//",
                             queue_prefix=unique_prefix(), **FAST)
    return make_settings(home, queue_prefix=unique_prefix(), **FAST)


def _lose_one_message(settings, broker: str) -> None:
    """Take one message out of reach in the rows queue, as ``broker`` loses or hides it."""
    name = queue_name(settings, "rows")
    if broker == "sqs":
        import boto3

        sqs = boto3.client("sqs")
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]) == 1
        hidden = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
        assert hidden["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    elif broker == "redis":  # kombu's keys carry PELLETSEG_QUEUE_PREFIX once more
        import redis

        lost = redis.Redis.from_url(settings.broker_url).lpop(settings.queue_prefix + name)
        assert lost is not None
    elif broker == "rabbitmq":  # taken and acknowledged by mistake: gone from the queue
        with make_worker_app(settings).connection_for_read() as conn:
            assert conn.default_channel.basic_get(queue=name, no_ack=True) is not None
    else:
        import sqlalchemy as sa

        engine = sa.create_engine(settings.resolved_broker_url.removeprefix("sqla+"))
        with engine.begin() as conn:
            taken = conn.execute(sa.text(
                "UPDATE kombu_message SET visible = 0 WHERE id = (SELECT m.id FROM kombu_message m"
                " JOIN kombu_queue q ON q.id = m.queue_id WHERE q.name = :name AND m.visible = 1"
                " ORDER BY m.id LIMIT 1)"), {"name": name}).rowcount
        engine.dispose()
        assert taken == 1


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["sqs", pytest.param("redis", marks=pytest.mark.redis),
                                    "rabbitmq", "embedded"])
def test_row_whose_message_was_lost_or_hidden_is_done_after_the_grace(
    broker, request, tmp_path, tiny_package, broker_cleanup, micrograph
):
    settings = _settings(broker, tmp_path / "home", request)
    broker_cleanup(settings)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_worker_app(settings)
    ctx = WorkerContext.on_broker(settings, app)
    ctx.models.publish(tiny_package)
    job = ctx.table.jobs.create(SubmissionService(settings).build_spec(str(micrograph)))
    assert len(plan_job(ctx, job.id)) == 6
    # AMQP publishes without confirms: the broker may still be routing them when plan_job returns
    wait_for(lambda: ctx.queue_depth("rows") == 6, 10,
             lambda: f"6 row messages waiting, not {ctx.queue_depth('rows')},")
    _lose_one_message(settings, broker)
    assert ctx.queue_depth("rows") == 5  # the lost one is not counted as waiting

    with LocalWorkers(settings, 1):  # a real `celery worker`: its liveness thread reconciles
        done = wait_for(lambda: (j := ctx.table.jobs.get(job.id)).status in JOB_TERMINAL and j,
                        90, lambda: job_state("the job did not end", ctx, job.id))
    assert done.status == JobStatus.SUCCEEDED, done.error
    rows = ctx.table.rows.list(job.id)
    assert {r.status for r in rows} == {RowStatus.DONE}
    assert [r.attempts for r in rows] == [1] * 6  # the lost row was run once, not failed
