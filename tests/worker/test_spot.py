"""Spot interruption: the IMDSv2 client and watcher against a local fake metadata service, the
row release in the job table, and real ``celery worker`` processes that get a notice in the
middle of a row (release: the row goes back to pending at once, without costing an attempt;
finish: the row finishes) and take no new rows afterwards."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import pyvips

from core.states import JOB_TERMINAL, JobStatus, RowStatus
from queues.app import make_celery, send
from queues.names import ROW_TASK
from storage.blobs.layout import row_key
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.conftest import free_port, wait_for
from tests.worker.conftest import DEMO_DATA, make_settings, unique_prefix
from worker.context import WorkerContext
from worker.local import LocalWorkers
from worker.spot import (
    Drain,
    Imds,
    MetadataError,
    Notice,
    SpotWatcher,
    clear_draining,
    draining,
)
from worker.stages.planning import plan_job
from worker.stages.segmenting import segment_row

NOTICE = {"action": "terminate", "time": "2026-11-23T10:02:00Z"}


class FakeImds(ThreadingHTTPServer):
    """A local IMDSv2: ``PUT /latest/api/token`` gives a token; the spot instance-action
    answers 401 without a valid token, 404 until :attr:`notice` is set, then the notice."""

    def __init__(self):
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.notice: dict | None = None
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.action_requests = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeImds

    def do_PUT(self):  # http.server names the handlers
        if self.path != "/latest/api/token" or not self.headers.get(
                "X-aws-ec2-metadata-token-ttl-seconds"):
            return self._answer(400, b"")
        with self.server.lock:
            self.server.token_requests += 1
            token = f"token-{self.server.token_requests}"
            self.server.tokens.add(token)
        self._answer(200, token.encode())

    def do_GET(self):
        if self.path != "/latest/meta-data/spot/instance-action":
            return self._answer(404, b"")
        with self.server.lock:
            self.server.action_requests += 1
            valid = self.headers.get("X-aws-ec2-metadata-token") in self.server.tokens
            notice = self.server.notice
        if not valid:
            return self._answer(401, b"")
        if notice is None:
            return self._answer(404, b"Not Found")
        self._answer(200, json.dumps(notice).encode())

    def _answer(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def imds():
    server = FakeImds()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _fresh_draining_mark():
    clear_draining()
    yield
    clear_draining()


def test_imds_client_uses_one_token_and_reads_the_notice(imds):
    client = Imds(imds.url)
    assert client.instance_action(now=0.0) is None
    assert client.instance_action(now=1.0) is None
    imds.notice = NOTICE
    notice = client.instance_action(now=2.0)
    assert notice.action == "terminate"
    assert notice.time.isoformat() == "2026-11-23T10:02:00+00:00"
    assert imds.token_requests == 1 and imds.action_requests == 3


def test_imds_client_replaces_a_token_the_service_no_longer_accepts(imds):
    client = Imds(imds.url)
    assert client.instance_action(now=0.0) is None
    imds.tokens.clear()  # e.g. the instance was stopped and started
    assert client.instance_action(now=1.0) is None
    assert imds.token_requests == 2


def test_imds_errors_are_metadata_errors(imds):
    with pytest.raises(MetadataError, match="unreachable"):
        Imds(f"http://127.0.0.1:{free_port()}", timeout=0.5).instance_action(now=0.0)
    imds.notice = {"no": "action"}
    with pytest.raises(MetadataError, match="malformed"):
        Imds(imds.url).instance_action(now=0.0)


def test_watcher_reports_the_first_notice_once_and_stops(imds):
    seen: list[Notice] = []
    watcher = SpotWatcher(Imds(imds.url), 0.05, seen.append).start()
    deadline = time.monotonic() + 5
    while watcher.polls < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == [] and watcher.polls >= 3
    imds.notice = NOTICE
    watcher._thread.join(5)
    assert not watcher._thread.is_alive()
    assert [n.action for n in seen] == ["terminate"]
    watcher.stop()


def test_watcher_keeps_polling_while_the_service_is_unreachable():
    watcher = SpotWatcher(Imds(f"http://127.0.0.1:{free_port()}", timeout=0.2), 0.05,
                          lambda notice: None).start()
    deadline = time.monotonic() + 5
    while watcher.polls < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    watcher.stop()
    assert watcher.polls >= 3 and watcher.notice is None


def test_released_rows_go_back_to_pending_without_costing_an_attempt(stack, micrograph):
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    plan_job(stack, job.id)
    stack.sent.clear()
    assert stack.table.rows.claim(job.id, 1, stack.worker_id, 600).claimed
    assert stack.table.rows.claim(job.id, 4, "other-host:7", 600).claimed
    before = stack.table.rows.get(job.id, 1)

    class _Consumer:  # a consumer without queues or event loop: nothing to cancel
        hub = None
        task_consumer = None

    drain = Drain(_Consumer(), "release", lambda: stack,
                  active_workers=lambda ctx: {ctx.worker_id})
    drain(Notice("terminate", None))
    assert draining()
    assert drain.released == [(job.id, 1)]
    assert stack.sent == [(ROW_TASK, job.id, 1)]
    row = stack.table.rows.get(job.id, 1)
    assert row.status == RowStatus.PENDING and row.attempts == before.attempts - 1 == 0
    assert "spot terminate notice" in row.error and row.enqueued_at != before.enqueued_at
    assert stack.table.rows.get(job.id, 4).status == RowStatus.RUNNING  # not this worker's
    assert stack.table.recovery.release_rows([stack.worker_id], "again") == []  # idempotent


def test_row_claimed_after_the_release_is_handed_back_too(stack, micrograph):
    """A thread of a threads pool passed the task's draining check just before the notice
    and claims its row after the release: in release mode it hands that row back as well."""
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    plan_job(stack, job.id)
    stack.sent.clear()
    stack.settings.spot_mode = "release"

    class _Consumer:
        hub = None
        task_consumer = None

    Drain(_Consumer(), "release", lambda: stack, active_workers=lambda ctx: {ctx.worker_id})(
        Notice("terminate", None))
    assert segment_row(stack, job.id, 2) == "released"
    row = stack.table.rows.get(job.id, 2)
    assert row.status == RowStatus.PENDING and row.attempts == 0 and "spot" in row.error
    assert stack.sent == [(ROW_TASK, job.id, 2)]
    assert not stack.blobs.exists(row_key(job.id, 2))  # nothing computed on the doomed worker
    stack.settings.spot_mode = "finish"  # finish mode: a claimed row runs to the end
    assert segment_row(stack, job.id, 2) == "done"


# ------------------------------------------------------------- real worker processes
@pytest.fixture(scope="module")
def tall_image(tmp_path_factory):
    """A 480 x 3900 px strip of real micrographs: 41 tile rows of 5 tiles; with 14 tile rows
    per task, 3 row records of about 70 tiles each."""
    tiles = [pyvips.Image.new_from_file(str(p)) for p in sorted(DEMO_DATA.glob("*.png"))]
    out = tmp_path_factory.mktemp("spot") / "tall.png"
    pyvips.Image.arrayjoin(tiles, across=1).crop(200, 0, 480, 3900).pngsave(str(out))
    return out


def _until(predicate, timeout: float, what: str):
    return wait_for(predicate, timeout, what, poll=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("mode,broker", [
    pytest.param("release", "redis", marks=pytest.mark.redis),
    ("finish", "embedded"),
])
def test_worker_on_spot_notice_stops_taking_rows_and_releases_or_finishes_its_row(
    mode, broker, imds, tmp_path, tiny_package, tall_image, request, broker_cleanup
):
    extra = {}
    if broker == "redis":
        extra = dict(broker_url=request.getfixturevalue("redis_url"),
                     queue_prefix=unique_prefix())
    base = make_settings(tmp_path / "home", rows_per_task=14, **extra)
    broker_cleanup(base)
    base.ensure_home()
    upgrade(base.resolved_database_url)
    app = make_celery(base)
    ctx = WorkerContext.from_settings(base, lambda task, *args: send(app, task, *args))
    ctx.models.publish(tiny_package)
    spot = base.model_copy(update=dict(spot_mode=mode, spot_metadata_url=imds.url,
                                       spot_poll_seconds=0.1))
    spot.model_fields_set.update({"spot_mode", "spot_metadata_url", "spot_poll_seconds"})

    with LocalWorkers(spot, 1) as doomed:
        doomed_id = f"{ctx.worker_id.rsplit(':', 1)[0]}:{doomed.procs[0].pid}"
        job = (svc := SubmissionService(base, app=app)).submit(svc.build_spec(str(tall_image)))
        first = _until(
            lambda: next((r for r in ctx.table.rows.list(job.id, [RowStatus.RUNNING])
                          if r.worker == doomed_id), None),
            90, "the worker never claimed a row")
        imds.notice = NOTICE  # two minutes' notice, in the middle of that row
        if mode == "release":
            _until(lambda: ctx.table.rows.get(job.id, first.index).status == RowStatus.PENDING,
                   10, "the row was not released")
            assert ctx.table.rows.get(job.id, first.index).attempts == 0
        else:
            _until(lambda: ctx.table.rows.get(job.id, first.index).status == RowStatus.DONE,
                   60, "the running row did not finish")
            assert ctx.table.rows.get(job.id, first.index).worker == doomed_id
        time.sleep(3)  # the doomed worker is idle now, not taking the rows still queued
        rows = ctx.table.rows.list(job.id)
        assert len(rows) == 3
        assert [r.index for r in rows if r.worker == doomed_id and r.index != first.index] == []
        assert sum(r.status == RowStatus.PENDING for r in rows) == (3 if mode == "release" else 2)
        assert doomed.alive() == 1  # it stays up until the instance goes
        with LocalWorkers(base, 1) as rescue:
            rescue_id = f"{ctx.worker_id.rsplit(':', 1)[0]}:{rescue.procs[0].pid}"
            done = _until(lambda: (j := ctx.table.jobs.get(job.id)).status in JOB_TERMINAL and j,
                          120, "the job did not end")
    assert done.status == JobStatus.SUCCEEDED, done.error
    rows = ctx.table.rows.list(job.id)
    assert all(r.status == RowStatus.DONE and r.attempts == 1 for r in rows), [
        (r.index, r.status, r.attempts, r.worker, r.error) for r in rows]
    others = [r for r in rows if r.index != first.index]
    assert all(r.worker == rescue_id for r in others)
    if mode == "release":
        assert rows[first.index].worker == rescue_id  # taken over at once, not after a lease
    assert ctx.blobs.exists(row_key(job.id, first.index))
    log = (base.home / "logs" / "worker-0.log").read_text()
    assert "spot.notice" in log and "spot.consumers_cancelled" in log
    assert ("spot.rows_released" in log) == (mode == "release")
