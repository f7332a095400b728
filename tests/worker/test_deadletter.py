"""Dead-letter queues: a row that always fails is received max_attempts times, fails its row
and job with the row's reason and ends in the rows dead-letter queue; resume after fixing the
cause succeeds. On SQS (moto server: native redrive policy), Redis (pelletseg's receive
counter), RabbitMQ (quorum queue + dead-letter exchange) and the embedded broker, through a
real Celery worker (``start_worker``), never eager mode."""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager

import numpy as np
import pytest
from celery.contrib.testing.worker import start_worker

from core.states import JOB_TERMINAL, JobStatus, RowStatus
from queues.app import task_queue
from queues.deadletters import count_receive, dead_letters, declare_dead_letter_queues
from queues.names import PLAN_TASK, QUEUES, ROW_TASK, broker_kind, queue_name
from storage.blobs.layout import FRACTIONS_JSON, output_key
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.conftest import port_open, wait_for
from tests.worker.conftest import job_state, make_settings, sqs_settings, unique_prefix
from worker.context import WorkerContext
from worker.tasks import make_worker_app

BROKERS = [
    "sqs",
    pytest.param("redis", marks=pytest.mark.redis),
    "rabbitmq",
    "embedded",
]


def _settings(broker: str, tmp_path, request):
    home = tmp_path / "home"
    common = dict(max_attempts=3, queue_prefix=unique_prefix())
    if broker == "sqs":
        return sqs_settings(home, request.getfixturevalue("moto_endpoint"), **common)
    if broker == "redis":
        return make_settings(home, broker_url=request.getfixturevalue("redis_url"), **common)
    if broker == "rabbitmq":
        if not port_open(5672):
            pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
        return make_settings(home, broker_url="amqp://guest:guest@127.0.0.1:5672//", **common)
    return make_settings(home, **common)


@pytest.fixture
def stack_on(request, tmp_path, tiny_package, broker_cleanup):
    """(settings, worker app, context) on the broker named by the test's parameter."""
    settings = _settings(request.param, tmp_path, request)
    broker_cleanup(settings)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_worker_app(settings)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    ctx.models.publish(tiny_package)
    return settings, app, ctx


def _until(predicate, timeout: float, what):
    return wait_for(predicate, timeout, what, poll=0.3)


@contextmanager
def _worker(app, settings):
    """A real in-process worker; on SQS, once it has stopped, its last long poll is waited
    out: a message sent while that poll is in flight is received by it and hidden for the
    visibility timeout (an hour). Measured 2026-12-06: 4 of 8 messages sent right after the
    stop were hidden, 0 of 8 after 1.5 s. A ``celery worker`` process does the same on
    SIGTERM; there the reconciler's lost-message pass enqueues the row again
    (tests/worker/test_lost_messages.py), but in-process workers run no reconciler."""
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=[queue_name(settings, q) for q in QUEUES], loglevel="WARNING",
                      shutdown_timeout=60):
        yield
    if broker_kind(settings.resolved_broker_url) == "sqs":
        time.sleep(settings.broker_transport_options["wait_time_seconds"] + 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("stack_on", BROKERS, indirect=True)
def test_row_that_always_fails_ends_in_the_dead_letter_queue_and_resume_succeeds(
    stack_on, micrograph, monkeypatch
):
    settings, app, ctx = stack_on
    import worker.stages.segmenting

    real_write = worker.stages.segmenting.write_strip
    writes_of_row_2: list[str] = []

    def failing_write(labels, path):  # the scratch disk fails on row 2, every time
        if path.name == "00002.tif":
            writes_of_row_2.append(str(path))
            raise RuntimeError("scratch disk error writing 00002.tif")
        return real_write(labels, path)

    monkeypatch.setattr(worker.stages.segmenting, "write_strip", failing_write)
    from worker.deadletter import DeliveryPolicy

    receives_of_row_2: list[int | None] = []
    real_receive = DeliveryPolicy.receive

    def spy_receive(self, task):
        number = real_receive(self, task)
        if task.name == ROW_TASK and list(task.request.args)[1] == 2:
            receives_of_row_2.append(number)
        return number

    monkeypatch.setattr(DeliveryPolicy, "receive", spy_receive)
    with _worker(app, settings):
        job = (svc := SubmissionService(settings, app=app)).submit(svc.build_spec(str(micrograph)))
        failed = _until(lambda: (j := ctx.table.jobs.get(job.id)).status in JOB_TERMINAL and j,
                        120, "the job did not end")
        letters = _until(lambda: dead_letters(settings, "rows"), 30,
                         "no message reached the rows dead-letter queue")
        time.sleep(1.5)  # nothing else follows it there
        letters = dead_letters(settings, "rows")

    assert failed.status == JobStatus.FAILED
    assert "row 2 failed after 3 attempts" in failed.error
    assert "scratch disk error writing 00002.tif" in failed.error
    row = ctx.table.rows.get(job.id, 2)
    assert row.status == RowStatus.FAILED and row.attempts == 3
    assert len(writes_of_row_2) == 3  # one attempt per receive of the same message
    embedded = settings.resolved_broker_url.startswith("sqla")
    assert receives_of_row_2 == ([None] * 3 if embedded else [1, 2, 3])  # the broker's count
    assert len(letters) == 1
    letter = letters[0]
    assert letter.task == ROW_TASK and letter.args == [job.id, 2]
    if settings.broker_url and settings.broker_url.startswith("redis"):
        assert letter.receives == 3 and "scratch disk error" in letter.reason
    elif settings.broker_url and settings.broker_url.startswith("amqp"):
        assert letter.reason == "rejected"  # by the task, through the dead-letter exchange
    elif settings.broker_url and settings.broker_url.startswith("sqs"):
        assert letter.receives >= 3  # moved by SQS's redrive policy (maxReceiveCount = 3)
    else:
        assert "scratch disk error" in letter.reason
    others = [r for r in ctx.table.rows.list(job.id) if r.index != 2]
    assert len(others) == 5  # rows not yet done when the job failed wait for the resume
    assert {r.status for r in others} <= {RowStatus.DONE, RowStatus.PENDING}

    monkeypatch.undo()  # the cause is fixed
    with _worker(app, settings):
        SubmissionService(settings, app=app).resume(job.id)
        done = _until(lambda: (j := ctx.table.jobs.get(job.id)).status in JOB_TERMINAL and j,
                      120, lambda: job_state("the resumed job did not end", ctx, job.id))
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert ctx.table.rows.get(job.id, 2).attempts == 1
    doc = json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert sum(c["pixels"] for c in doc["classes"]) == 700 * 500
    assert len(dead_letters(settings, "rows")) == 1  # kept for the operator, nothing more


@pytest.mark.parametrize("stack_on", [pytest.param("redis", marks=pytest.mark.redis)],
                         indirect=True)
def test_message_received_more_than_max_attempts_times_is_dead_lettered_and_fails_its_job(
    stack_on, micrograph
):
    """A planning message whose workers kept dying (three receives counted, none finished):
    its next receive goes to the dead-letter queue unrun and the job fails with the reason."""
    settings, app, ctx = stack_on
    job = ctx.table.jobs.create(SubmissionService(settings).build_spec(str(micrograph)))
    message_id = str(uuid.uuid4())
    for _ in range(settings.max_attempts):
        count_receive(settings, message_id)
    app.send_task(PLAN_TASK, args=[job.id], task_id=message_id,
                  queue=task_queue(app, PLAN_TASK))
    with _worker(app, settings):
        failed = _until(lambda: (j := ctx.table.jobs.get(job.id)).status in JOB_TERMINAL and j,
                        60, "the job did not end")
    assert failed.status == JobStatus.FAILED
    assert f"was received {settings.max_attempts + 1} times without finishing" in failed.error
    assert ctx.table.rows.progress(job.id).total == 0  # never planned
    letters = dead_letters(settings, "plan")
    assert [(d.task, d.args, d.message_id, d.receives) for d in letters] == [
        (PLAN_TASK, [job.id], message_id, settings.max_attempts + 1)]


@pytest.mark.parametrize("stack_on", ["sqs", "rabbitmq"], indirect=True)
def test_broker_dead_letters_a_message_never_acknowledged_max_attempts_times(stack_on):
    """A worker that dies on a message never acks it; the broker itself (SQS redrive policy,
    RabbitMQ quorum delivery limit) moves it after max_attempts deliveries."""
    settings, app, _ctx = stack_on
    app.send_task(PLAN_TASK, args=["job-x"], task_id="m-1", queue=task_queue(app, PLAN_TASK))
    name = queue_name(settings, "plan")
    if settings.broker_url.startswith("sqs"):
        import boto3

        client = boto3.client("sqs")
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
        deliveries = 0
        for _ in range(settings.max_attempts + 1):
            got = client.receive_message(QueueUrl=url, VisibilityTimeout=0,
                                         WaitTimeSeconds=1).get("Messages", [])
            deliveries += len(got)  # never deleted: the "worker" died
    else:
        from kombu import Connection

        declare_dead_letter_queues(settings)
        queue = next(q for q in app.amqp.queues.values() if q.name == name)
        deliveries = 0
        with Connection(settings.resolved_broker_url) as conn:
            bound = queue(conn.channel())
            for _ in range(settings.max_attempts + 1):
                message = _until(lambda: bound.get(no_ack=False) or None, 5, "no delivery") \
                    if deliveries < settings.max_attempts else bound.get(no_ack=False)
                if message is None:
                    break
                deliveries += 1
                message.reject(requeue=True)  # connection lost mid-task: back to the queue
    assert deliveries == settings.max_attempts
    letters = _until(lambda: dead_letters(settings, "plan"), 10, "nothing dead-lettered")
    assert [(d.task, d.args, d.message_id) for d in letters] == [(PLAN_TASK, ["job-x"], "m-1")]
    assert np.all([d.receives is None or d.receives >= settings.max_attempts for d in letters])


@pytest.mark.parametrize("url,count_of,last_requeue", [
    ("sqs://testing:testing@127.0.0.1:1", lambda n: {"properties": {"delivery_info": {
        "sqs_message": {"Attributes": {"ApproximateReceiveCount": str(n)}}}}}, True),
    ("amqp://guest:guest@127.0.0.1:1//", lambda n: {"x-delivery-count": n - 1}, False),
])
def test_storage_error_redelivers_and_the_last_receive_gives_up(tmp_path, url, count_of,
                                                                 last_requeue):
    """The job table stays away past its retries: the message comes back (one more receive);
    on the last receive the stage's job is failed (give_up) and the message dead-lettered."""
    from types import SimpleNamespace

    from celery.exceptions import Reject

    from queues.app import make_celery
    from storage.errors import StorageError
    from worker.deadletter import DeliveryPolicy, judge_done

    settings = make_settings(tmp_path, broker_url=url, max_attempts=3)
    delivery = DeliveryPolicy(make_celery(settings), settings)
    given_up: list[str] = []

    def stage():
        raise StorageError("job table at postgresql://db does not answer")

    for receive, requeue, gave_up in ((1, True, []), (2, True, []), (3, last_requeue, [1])):
        task = SimpleNamespace(name=PLAN_TASK, request=SimpleNamespace(
            id="m-1", args=["job-1"], kwargs={}, delivery_info={}, **count_of(receive)))
        with pytest.raises(Reject) as rejected:
            delivery.run(task, stage, judge_done, given_up.append)
        assert rejected.value.requeue is requeue
        assert len(given_up) == len(gave_up)
    assert "does not answer" in given_up[0]
