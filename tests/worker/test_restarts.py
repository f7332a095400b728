"""Services that go away and come back: PostgreSQL connections dropped mid-job, the broker
restarted mid-job (a private redis-server, never the shared one), a database unreachable for a
while (a local TCP proxy switched off), a broker down while a job is submitted, and a reducer
message lost. Workers and the API retry with backoff; the job table recovers what a broker
lost; no row is done without its checkpoint blob, and no blob lacks its row."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
import pyvips
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from core.states import JOB_TERMINAL, JobStatus, RowStatus
from queues.app import make_celery, send
from queues.names import PLAN_TASK, REDUCE_TASK
from storage.blobs.layout import LABELS, output_key, row_blob_keys, row_key
from storage.errors import NotFoundError, StorageError
from storage.jobtable.engine import make_engine, upgrade
from storage.jobtable.retries import is_transient
from storage.jobtable.table import JobTable
from submission import SubmissionService, prepare
from tests.conftest import free_port, port_open
from tests.worker.conftest import DEMO_DATA, make_settings, read_tiff, reference_run
from worker.context import WorkerContext
from worker.local import LocalWorkers, log_tail
from worker.stages.planning import plan_job
from worker.stages.reconciling import reconcile
from worker.stages.reducing import reduce_job
from worker.stages.segmenting import segment_row


class PrivateRedis:
    """A redis-server of this test only, on a free port, without persistence: stopping it
    loses every message, as a broker that restarts without a disk would."""

    def __init__(self, folder):
        self.port, self.folder, self.proc = free_port(), folder, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


class TcpProxy:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target that can be switched off (every
    connection cut, new ones refused) and on again: a database that is unreachable for a
    while."""

    def __init__(self, target: int):
        self.port, self.target = free_port(), target
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)  # shutdown() wakes the thread blocked in accept()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self.accepted += 1
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture(scope="module")
def tall_image(tmp_path_factory):
    """A 480 x 3900 px strip of real micrographs: 41 rows of the test geometry."""
    tiles = [pyvips.Image.new_from_file(str(p)) for p in sorted(DEMO_DATA.glob("*.png"))]
    out = tmp_path_factory.mktemp("restarts") / "tall.png"
    pyvips.Image.arrayjoin(tiles, across=1).crop(200, 0, 480, 3900).pngsave(str(out))
    return out


def _drop_connections(pg_url: str) -> int:
    """pg_terminate_backend on every other connection to this test's own database."""
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_job_survives_dropped_database_connections_and_a_broker_restart(
    pg_url, private_redis, tmp_path, tiny_package, tall_image
):
    ref_labels, ref_doc = reference_run(tmp_path, tiny_package, tall_image)
    settings = make_settings(
        tmp_path / "home", database_url=pg_url, broker_url=private_redis.url, lease_seconds=4,
        pending_timeout_seconds=8, reduce_timeout_seconds=10, max_attempts=20,
        db_retry_seconds=60, broker_retry_seconds=30, consumer_stall_seconds=10)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_celery(settings)
    ctx = WorkerContext.from_settings(settings, lambda task, *args: send(app, task, *args))
    ctx.models.publish(tiny_package)
    dropped: list[int] = []
    restarted = False
    with LocalWorkers(settings, 2):
        job = (svc := SubmissionService(settings, app=app)).submit(svc.build_spec(str(tall_image)))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if ctx.table.jobs.get(job.id).status in JOB_TERMINAL:
                break
            done = ctx.table.rows.progress(job.id).done
            if (done >= 4 and not dropped) or (done >= 25 and len(dropped) == 1):
                dropped.append(_drop_connections(pg_url))
            if done >= 12 and not restarted:  # every queued message is lost with it
                private_redis.stop()
                time.sleep(1.0)
                private_redis.start()
                restarted = True
            reconcile(ctx)  # Celery beat's job in production
            time.sleep(0.5)
    finished = ctx.table.jobs.get(job.id)
    assert finished.status == JobStatus.SUCCEEDED, (
        f"{finished.status}: {finished.error}; rows not done: "
        + "; ".join(f"{r.index} {r.status} by {r.worker} ({r.error})"
                    for r in ctx.table.rows.list(job.id) if r.status != RowStatus.DONE)
        + "\n" + log_tail(settings))
    assert restarted and len(dropped) == 2 and min(dropped) > 0  # workers' connections cut
    rows = ctx.table.rows.list(job.id)
    assert len(rows) == 41 and all(r.status == RowStatus.DONE for r in rows)
    # No row done without its checkpoint, and no checkpoint without its row.
    assert ctx.blobs.list(f"jobs/{job.id}/rows") == sorted(
        k for r in rows for k in row_blob_keys(job.id, r.index))
    assert all(r.blob_key == row_key(job.id, r.index) for r in rows)
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    assert labels.tobytes() == ref_labels.tobytes()
    assert np.sum([r.counts for r in rows]) == 480 * 3900  # every pixel counted once
    assert ctx.table.rows.class_counts(job.id, 3) == [c["pixels"] for c in ref_doc["classes"]]


def test_sending_a_job_waits_for_a_broker_that_comes_back(private_redis, tmp_path, micrograph,
                                                          tiny_package):
    """The API side: the broker is down when a job is submitted and back 2 s later; the
    plan message is published (Celery's publish retry policy), the job stays queued."""
    import redis

    settings = make_settings(tmp_path / "home", broker_url=private_redis.url,
                             broker_retry_seconds=30)
    prepare(settings).publish(tiny_package)
    service = SubmissionService(settings, app=make_celery(settings))
    spec = service.build_spec(str(micrograph))
    private_redis.stop()
    restart = threading.Timer(2.0, private_redis.start)
    restart.start()
    try:
        job = service.submit(spec)
    finally:
        restart.join()
    assert job.status == JobStatus.QUEUED
    assert WorkerContext.from_settings(settings, lambda *a: None).table.jobs.get(job.id).status \
        == JobStatus.QUEUED
    assert redis.Redis.from_url(private_redis.url).llen("plan") == 1


@pytest.mark.postgres
def test_job_table_calls_wait_for_a_database_that_comes_back(pg_url, stack, micrograph,
                                                              monkeypatch):
    """Workers and the API share the job table: a call made while PostgreSQL is unreachable
    retries with backoff and returns once it is back; a missing job is not retried."""
    import storage.jobtable.retries

    retries: list[int] = []
    log_retry = storage.jobtable.retries._log_retry
    monkeypatch.setattr(storage.jobtable.retries, "_log_retry",
                        lambda state: retries.append(state.attempt_number) or log_retry(state))
    proxy = TcpProxy(5432)
    proxy.up()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    engine = make_engine(url)
    store = JobTable(engine, retry_seconds=30)
    try:
        job = store.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
        proxy.down()
        threading.Timer(2.0, proxy.up).start()
        got = store.jobs.get(job.id)  # blocks, retrying, until the proxy is back
        assert got.id == job.id and got.status == JobStatus.QUEUED
        assert proxy.accepted >= 2  # a fresh connection after the outage
        assert retries and retries == list(range(1, len(retries) + 1))  # backed off, retried
        retries.clear()
        with pytest.raises(NotFoundError):
            store.jobs.get("no-such-job")
        assert retries == []  # not a connection problem: raised at once
    finally:
        proxy.down()
        engine.dispose()


def test_transient_errors_are_told_from_permanent_ones():
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    try:
        try:
            raise lost
        except OperationalError as e:
            raise StorageError("job table error") from e
    except StorageError as wrapped:
        assert is_transient(wrapped)
    duplicate = IntegrityError("INSERT", {}, Exception("duplicate key"))
    assert not is_transient(StorageError("x"))
    assert not is_transient(duplicate)


def test_reducer_whose_message_was_lost_is_enqueued_again(stack, micrograph):
    stack.settings.reduce_timeout_seconds = 1
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    for index in plan_job(stack, job.id):
        assert segment_row(stack, job.id, index) == "done"
    assert stack.table.jobs.get(job.id).status == JobStatus.REDUCING
    stack.sent.clear()  # the reduce message is lost (broker restarted without persistence)
    assert reconcile(stack) == [] and stack.sent == []  # not stale yet
    time.sleep(1.2)
    reconcile(stack)
    assert stack.sent == [(REDUCE_TASK, job.id)]
    reconcile(stack)
    assert stack.sent == [(REDUCE_TASK, job.id)]  # once per timeout, not on every tick
    assert reduce_job(stack, job.id) is not None
    assert stack.table.jobs.get(job.id).status == JobStatus.SUCCEEDED


def test_planner_whose_message_was_lost_is_enqueued_again(stack, micrograph):
    stack.settings.pending_timeout_seconds = 1
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    # the plan message is lost: the job stays queued
    assert reconcile(stack) == [] and stack.sent == []  # not stale yet
    time.sleep(1.2)
    reconcile(stack)
    assert stack.sent == [(PLAN_TASK, job.id)]
    reconcile(stack)
    assert stack.sent == [(PLAN_TASK, job.id)]  # once per timeout, not on every tick
    stack.sent.clear()
    rows = plan_job(stack, job.id)
    assert rows and stack.table.jobs.get(job.id).status == JobStatus.RUNNING
    assert plan_job(stack, job.id) == []  # a second (late) delivery of the lost message
    assert stack.table.rows.progress(job.id).total == len(rows)

