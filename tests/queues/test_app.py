"""Queue layout from settings: the queue prefix on every queue, route and broker key; the
at-least-once and soft-shutdown Celery settings; RabbitMQ dead-letter arguments; the SQS queues
with their dead-letter queues and redrive policy (moto server)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from amqp.exceptions import MessageNacked
from kombu import Connection, Queue

from core.settings import Settings
from queues.app import make_celery, publish_retry_policy, send, task_queue, transport_options
from queues.deadletters import create_sqs_queues, delete_queues, sqs_dlq_name
from queues.names import NOTIFY_TASK, PLAN_TASK, QUEUE_OF_TASK, REDUCE_TASK, ROW_TASK, broker_kind
from tests.conftest import port_open


def _settings(tmp_path, **values) -> Settings:
    return Settings(home=tmp_path, **values)


def test_prefix_names_every_queue_and_route_and_default_keeps_plain_names(tmp_path):
    plain = make_celery(_settings(tmp_path))
    assert [q.name for q in plain.conf.task_queues] == ["plan", "rows", "reduce"]
    assert task_queue(plain, ROW_TASK) == "rows" and task_queue(plain, PLAN_TASK) == "plan"
    app = make_celery(_settings(tmp_path, queue_prefix="ci-42-"))
    assert [q.name for q in app.conf.task_queues] == ["ci-42-plan", "ci-42-rows", "ci-42-reduce"]
    assert app.conf.task_default_queue == "ci-42-rows"
    assert {task_queue(app, t) for t in QUEUE_OF_TASK} == {"ci-42-plan", "ci-42-rows",
                                                          "ci-42-reduce"}
    assert task_queue(app, NOTIFY_TASK) == "ci-42-plan"


def test_send_puts_the_message_on_the_prefixed_queue(tmp_path):
    settings = _settings(tmp_path, queue_prefix="p1-", broker_url="memory://")
    app = make_celery(settings)
    send(app, REDUCE_TASK, "job-1")
    with Connection("memory://") as conn:
        message = Queue("p1-reduce", routing_key="p1-reduce")(conn.channel()).get()
        assert message is not None and message.headers["task"] == REDUCE_TASK
        assert Queue("reduce", routing_key="reduce")(conn.channel()).get() is None


def test_embedded_broker_polls_at_the_configured_interval_and_delivers(tmp_path):
    """kombu's SQLAlchemy transport would poll every 1 s (and rejects a polling_interval
    transport option); the embedded broker's app uses a subclass with the setting's interval,
    on the same SQLite file a plain ``sqla+sqlite`` connection (API metrics, DLQ tools) sees."""
    settings = _settings(tmp_path, embedded_poll_seconds=0.05)
    app = make_celery(settings)
    with app.connection_for_read() as conn:
        assert conn.transport.polling_interval == 0.05
        assert conn.transport.driver_type == "sql"  # kombu's SQLAlchemy transport
    send(app, PLAN_TASK, "job-7")
    with Connection(settings.resolved_broker_url) as conn:
        message = Queue("plan", routing_key="plan")(conn.channel()).get()
        assert message is not None and message.headers["argsrepr"] == "['job-7']"
    assert make_celery(_settings(tmp_path, broker_url="memory://")).conf.broker_transport is None
    with pytest.raises(ValueError):
        _settings(tmp_path, embedded_poll_seconds=0)


def test_embedded_drain_gives_way_to_a_worker_shutdown_and_takes_no_new_message(
        tmp_path, monkeypatch):
    """Celery's blocking loop drains 2 s, and once more after a shutdown signal: the embedded
    transport caps each drain at SHUTDOWN_CHECK_SECONDS and, once the worker's shutdown flag
    is set (a warm shutdown sets it to EX_OK, i.e. 0), returns at once, leaving a message that
    arrived meanwhile on its queue for the next worker."""
    import socket

    from celery.worker import state
    from kombu.transport import sqlalchemy as kombu_sqlalchemy

    from queues.embedded import SHUTDOWN_CHECK_SECONDS

    app = make_celery(_settings(tmp_path, embedded_poll_seconds=0.01))
    asked = []
    real = kombu_sqlalchemy.Transport.drain_events

    def recording(self, connection, timeout=None):
        asked.append(timeout)
        return real(self, connection, timeout=timeout)

    monkeypatch.setattr(kombu_sqlalchemy.Transport, "drain_events", recording)
    got = []
    with app.connection_for_read() as conn:
        queue = Queue("plan", routing_key="plan")
        with conn.Consumer([queue], callbacks=[lambda body, m: (got.append(body), m.ack())]):
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=2.0)  # empty queue: kombu's "nothing arrived"
            assert asked == [SHUTDOWN_CHECK_SECONDS] and SHUTDOWN_CHECK_SECONDS < 2.0
            send(app, PLAN_TASK, "job-8")
            monkeypatch.setattr(state, "should_stop", 0)  # SIGTERM: warm shutdown, EX_OK
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=2.0)
            assert got == [] and len(asked) == 1  # not even polled
            monkeypatch.setattr(state, "should_stop", None)
            conn.drain_events(timeout=2.0)
    assert len(got) == 1 and got[0][0] == ["job-8"]  # the next drain delivers it


def test_embedded_queue_created_by_another_process_meanwhile_is_used_not_fatal(tmp_path,
                                                                            monkeypatch):
    """Two workers starting on a fresh broker file: both miss the queue's row, the other one
    inserts it first; kombu's own channel dies on the unique constraint, ours reads the row."""
    import sqlite3

    from queues.app import celery_broker
    from queues.embedded import EmbeddedChannel

    url, transport = celery_broker(_settings(tmp_path))
    with Connection(url, transport=transport) as conn:
        channel = conn.channel()
        assert isinstance(channel, EmbeddedChannel)
        channel.queue_cls.metadata.create_all(channel.session.bind)  # the tables exist
        session = channel.session
        add = session.add

        def add_after_another_process(obj):  # the other worker's INSERT lands first
            with sqlite3.connect(session.bind.url.database) as other:
                other.execute("INSERT INTO kombu_queue (name) VALUES (?)", (obj.name,))
            add(obj)

        monkeypatch.setattr(session, "add", add_after_another_process)
        queue = channel._get_or_create("plan")
        monkeypatch.undo()
        assert queue.name == "plan"
        assert [q.name for q in session.query(channel.queue_cls)] == ["plan"]
        channel._put("plan", {"body": "x"})  # the channel still works
        assert channel._size("plan") == 1


def test_queue_prefix_must_be_a_valid_sqs_name_part(tmp_path):
    with pytest.raises(ValueError):
        _settings(tmp_path, queue_prefix="bad.prefix")
    with pytest.raises(ValueError):
        _settings(tmp_path, queue_prefix="x" * 41)


def test_at_least_once_and_soft_shutdown_settings(tmp_path):
    app = make_celery(_settings(tmp_path, soft_shutdown_seconds=45, broker_retry_seconds=20))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.task_ignore_result
    assert conf.result_backend is None
    assert conf.worker_soft_shutdown_timeout == 45.0
    assert conf.worker_enable_soft_shutdown_on_idle is False
    assert conf.broker_connection_retry and conf.broker_connection_max_retries is None
    assert conf.task_publish_retry
    policy = conf.task_publish_retry_policy
    waits = [min(policy["interval_max"], policy["interval_start"] + i * policy["interval_step"])
             for i in range(policy["max_retries"])]
    assert sum(waits) >= 20 > sum(waits[:-1])  # retries span the budget, no more


def test_publish_retry_policy_grows_to_its_cap():
    policy = publish_retry_policy(60)
    assert policy["interval_start"] < policy["interval_max"] == 5.0
    assert publish_retry_policy(0)["max_retries"] == 0


def test_redis_keys_share_the_prefix_and_rabbitmq_queues_dead_letter(tmp_path):
    redis_app = make_celery(_settings(tmp_path, queue_prefix="r-",
                                      broker_url="redis://127.0.0.1:6379/0"))
    assert redis_app.conf.broker_transport_options["global_keyprefix"] == "r-"
    amqp = _settings(tmp_path, queue_prefix="a-", max_attempts=4,
                     broker_url="amqp://guest:guest@127.0.0.1//")
    rows = next(q for q in make_celery(amqp).conf.task_queues if q.name == "a-rows")
    assert rows.queue_arguments == {
        "x-queue-type": "quorum", "x-delivery-limit": 3,
        "x-dead-letter-exchange": "a-pelletseg.dlx", "x-dead-letter-routing-key": "a-rows.dlq",
    }
    assert make_celery(_settings(tmp_path)).conf.task_queues[0].queue_arguments is None


@pytest.mark.parametrize("confirm", [True, False])
def test_rabbitmq_publishes_are_confirmed_so_a_refused_message_raises(tmp_path, confirm):
    """A message RabbitMQ refuses (here: into a full queue with ``reject-publish``; in service,
    one over ``max_message_size``) raises in the sender, so the API or planner reports the
    failure instead of a job that waits for a message never queued. With confirms turned off
    through ``PELLETSEG_BROKER_TRANSPORT_OPTIONS`` the same publish returns as if it had worked:
    the check below would fail without them."""
    if not port_open(5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    url = "amqp://guest:guest@127.0.0.1:5672//"
    default = _settings(tmp_path, broker_url=url)
    assert transport_options(default)["confirm_publish"] is True
    assert "confirm_publish" not in transport_options(_settings(tmp_path, broker_url="sqs://"))
    overrides = {} if confirm else {"confirm_publish": False}
    app = make_celery(_settings(tmp_path, broker_url=url, broker_transport_options=overrides))
    name = f"t{uuid.uuid4().hex[:10]}-full"
    full = Queue(name, routing_key=name, auto_delete=True,
                 queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    with app.connection_for_write() as conn:
        channel = conn.channel()
        full(channel).declare()
        try:
            producer = conn.Producer(channel)
            producer.publish({"n": 1}, routing_key=name)  # room for one
            if confirm:
                with pytest.raises(MessageNacked):
                    producer.publish({"n": 2}, routing_key=name)
            else:
                producer.publish({"n": 2}, routing_key=name)  # dropped, and nobody is told
            # Without confirms a publish returns before the broker has routed it: wait until the
            # first is queued and give the second time to arrive (and be refused); then the queue
            # holds the first alone and, once that is taken, nothing.
            deadline = time.monotonic() + 10
            while (full(channel).queue_declare(passive=True).message_count == 0
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            time.sleep(0.5)
            queued = channel.basic_get(name, no_ack=True)
            assert queued is not None and json.loads(queued.body) == {"n": 1}
            assert full(channel).queue_declare(passive=True).message_count == 0
        finally:
            full(conn.channel()).delete()


@pytest.mark.parametrize("url,kind", [
    ("sqla+sqlite:////tmp/b.db", "embedded"), ("redis://h:6379/1", "redis"),
    ("rediss://h", "redis"), ("amqp://g:g@h//", "amqp"), ("pyamqp://h", "amqp"),
    ("sqs://", "sqs"), ("memory://", "other"),
])
def test_broker_kind(url, kind):
    assert broker_kind(url) == kind


def test_sqs_queues_get_a_dead_letter_queue_and_redrive_policy(tmp_path, moto_endpoint):
    import boto3

    settings = _settings(tmp_path, queue_prefix="q7-", max_attempts=5, lease_seconds=2400,
                         broker_url="sqs://")
    client = boto3.client("sqs")
    try:
        predefined = create_sqs_queues(settings, client)
        assert set(predefined) == {"q7-plan", "q7-rows", "q7-reduce"}
        assert create_sqs_queues(settings, client) == predefined  # idempotent
        attrs = client.get_queue_attributes(QueueUrl=predefined["q7-rows"]["url"],
                                            AttributeNames=["All"])["Attributes"]
        policy = json.loads(attrs["RedrivePolicy"])
        dlq_url = client.get_queue_url(QueueName=sqs_dlq_name(settings, "rows"))["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url,
                                              AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert policy["deadLetterTargetArn"] == dlq_arn and int(policy["maxReceiveCount"]) == 5
        assert attrs["VisibilityTimeout"] == "4800"  # 2 x the lease, above kombu's 3600 floor
    finally:
        delete_queues(settings)
    names = client.list_queues(QueueNamePrefix="q7-").get("QueueUrls", [])
    assert names == []
