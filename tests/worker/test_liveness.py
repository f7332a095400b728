"""Worker heartbeats: a dead worker (three missed beats, or a clean stop) has its rows and
stages given back by any live worker's reconcile pass; a live worker's long row is never taken
from it, even past its lease, and a row it holds but no longer works on comes back at its next
beat; a restarted process with the same host:pid does not keep its
predecessor's rows; planner and reducer attempts are bounded; a job a dead local stack left
running can be resumed."""

from __future__ import annotations

import os
import signal
import time

import pytest

from core.states import JobStatus, RowStatus
from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK
from submission import SubmissionService
from submission.service import TransitionError
from worker.leases import ROWS_IN_FLIGHT, RowsInFlight
from worker.liveness import Liveness, StallWatch
from worker.stages.guard import plan_guarded, reduce_guarded
from worker.stages.planning import plan_job
from worker.stages.reconciling import reconcile
from worker.stages.segmenting import segment_row


def _planned(stack, micrograph):
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    plan_job(stack, job.id)
    stack.sent.clear()
    return job


def test_dead_workers_rows_come_back_within_three_beats(stack, micrograph):
    job = _planned(stack, micrograph)
    beats = stack.table.heartbeats
    beats.register("host:1", interval=0.2)
    beats.register("host:2", interval=60)
    assert stack.table.rows.claim(job.id, 0, "host:1", lease_seconds=600).claimed
    assert stack.table.rows.claim(job.id, 1, "host:2", lease_seconds=600).claimed
    assert reconcile(stack) == []  # both live
    time.sleep(0.7)  # host:1 misses three beats; host:2 keeps beating
    assert beats.beat("host:2", 60, 600)
    assert set(beats.live()) == {"host:2"}
    assert reconcile(stack) == [(job.id, 0)]  # long before the 600 s lease
    assert stack.sent == [(ROW_TASK, job.id, 0)]
    row = stack.table.rows.get(job.id, 0)
    assert row.status == RowStatus.PENDING and "host:1" in row.error
    assert stack.table.rows.get(job.id, 1).status == RowStatus.RUNNING
    assert reconcile(stack) == []  # conditional: a second pass moves nothing
    assert segment_row(stack, job.id, 0) == "done"


def test_a_live_workers_row_is_never_taken_even_past_its_lease(stack, micrograph):
    job = _planned(stack, micrograph)
    stack.table.heartbeats.register("slow:1", interval=60)
    assert stack.table.rows.claim(job.id, 2, "slow:1", lease_seconds=-1).claimed  # expired
    assert reconcile(stack) == []
    assert not stack.table.rows.claim(job.id, 2, "other:2", lease_seconds=30).claimed
    assert stack.table.rows.get(job.id, 2).worker == "slow:1"
    stack.table.heartbeats.stop("slow:1")  # a clean stop: dead at once
    assert reconcile(stack) == [(job.id, 2)]


def test_a_restarted_process_with_the_same_host_pid_gives_back_its_predecessors_rows(
        stack, micrograph):
    job = _planned(stack, micrograph)
    stack.table.heartbeats.register("box:1", interval=60)
    assert stack.table.rows.claim(job.id, 3, "box:1", lease_seconds=600).claimed
    time.sleep(0.01)
    # the container restarts: same host name, same pid; the new process registers
    assert stack.table.heartbeats.register("box:1", interval=60) == [(job.id, 3)]
    assert stack.table.rows.get(job.id, 3).status == RowStatus.PENDING


def test_registering_keeps_the_rows_the_process_already_works_on(stack, micrograph):
    job = _planned(stack, micrograph)
    beats, rows = stack.table.heartbeats, stack.table.rows
    assert rows.claim(job.id, 1, "box:2", lease_seconds=600).claimed  # a predecessor's row
    time.sleep(0.01)
    # the first task claims rows before the heartbeat thread registers the new process
    assert rows.claim(job.id, 2, "box:2", lease_seconds=600).claimed  # in flight
    _, since = RowsInFlight().snapshot()
    time.sleep(0.01)
    assert rows.claim(job.id, 3, "box:2", lease_seconds=600).claimed  # claimed after the read
    assert beats.register("box:2", interval=60, in_flight=[(job.id, 2)], since=since) == [
        (job.id, 1)]
    assert [rows.get(job.id, i).status for i in (1, 2, 3)] == [
        RowStatus.PENDING, RowStatus.RUNNING, RowStatus.RUNNING]
    assert [rows.get(job.id, i).attempts for i in (2, 3)] == [1, 1]


def test_the_liveness_thread_never_gives_back_the_row_claimed_before_it_registered(
        stack, micrograph):
    job = _planned(stack, micrograph)
    # a task of this process claimed (and works on) row 2 before the thread's first step
    with ROWS_IN_FLIGHT.hold(job.id, 2):
        assert stack.table.rows.claim(job.id, 2, stack.worker_id, lease_seconds=600).claimed
        with Liveness(lambda: stack) as live:
            deadline = time.monotonic() + 10
            while live.beats < 1:
                assert time.monotonic() < deadline, "the liveness thread never registered"
                time.sleep(0.02)
        row = stack.table.rows.get(job.id, 2)
        assert (row.status, row.worker, row.attempts) == (RowStatus.RUNNING, stack.worker_id, 1)
        assert (ROW_TASK, job.id, 2) not in stack.sent


def test_a_live_workers_beat_renews_rows_in_flight_and_hands_back_the_others(
        stack, micrograph):
    job = _planned(stack, micrograph)
    beats = stack.table.heartbeats
    beats.register("live:1", interval=60)
    for i in (0, 1):
        assert stack.table.rows.claim(job.id, i, "live:1", lease_seconds=1).claimed
    time.sleep(0.01)
    in_flight, since = RowsInFlight().snapshot()
    assert in_flight == frozenset()
    # row 0 is in flight; row 1's task stopped without an outcome (e.g. a dropped connection)
    beat = beats.beat("live:1", 60, 600, {(job.id, 0)}, since)
    assert beat.alive and beat.requeue == [(job.id, 1)]
    row0, row1 = stack.table.rows.get(job.id, 0), stack.table.rows.get(job.id, 1)
    assert row0.status == RowStatus.RUNNING and row0.worker == "live:1"
    assert (row0.lease_expires_at - row0.started_at).total_seconds() > 500  # renewed
    assert row1.status == RowStatus.PENDING and "live:1" in row1.error
    # a row claimed after the snapshot was read is not judged stray
    assert stack.table.rows.claim(job.id, 2, "live:1", lease_seconds=600).claimed
    assert beats.beat("live:1", 60, 600, {(job.id, 0)}, since).requeue == []
    # without a snapshot time nothing is handed back
    assert beats.beat("live:1", 60, 600).requeue == []
    assert segment_row(stack, job.id, 1) == "done"


def test_rows_in_flight_are_counted_per_holder():
    rows = RowsInFlight()
    with rows.hold("j", 1):
        with rows.hold("j", 1):  # two threads of one process on one row
            pass
        assert rows.snapshot()[0] == {("j", 1)}
    assert rows.snapshot()[0] == frozenset()
    with pytest.raises(RuntimeError), rows.hold("j", 2):
        raise RuntimeError("the task stopped")
    assert rows.snapshot()[0] == frozenset()  # left on the way out, whatever happened


def test_liveness_thread_beats_reconciles_and_stops(stack, micrograph):
    job = _planned(stack, micrograph)
    stack.settings.heartbeat_seconds = 0.25  # 3 missed beats (0.75 s) survive a loaded CI machine
    stack.settings.reconcile_seconds = 0.5
    stack.table.heartbeats.register("gone:9", interval=0.05)
    assert stack.table.rows.claim(job.id, 1, "gone:9", lease_seconds=600).claimed
    with Liveness(lambda: stack) as live:
        deadline = time.monotonic() + 10
        while stack.table.rows.get(job.id, 1).status != RowStatus.PENDING:
            assert time.monotonic() < deadline, "the dead worker's row never came back"
            time.sleep(0.05)
        assert stack.worker_id in stack.table.heartbeats.live()
    assert live.beats >= 2 and live.reconciles >= 1
    assert (ROW_TASK, job.id, 1) in stack.sent
    assert stack.worker_id not in stack.table.heartbeats.live()  # stopped cleanly


def test_stall_watch_needs_idle_with_messages_waiting_for_the_whole_window():
    watch = StallWatch(10)
    assert not watch.observe(True, 3, now=0)
    assert not watch.observe(True, 3, now=9.9)
    assert watch.observe(True, 3, now=10)
    assert not watch.observe(False, 3, now=11)  # busy: the window starts again
    assert not watch.observe(True, 3, now=12)
    assert not watch.observe(True, 0, now=30)  # nothing waiting: an idle worker is fine
    assert not watch.observe(True, 3, now=31)
    assert watch.observe(True, 1, now=41)
    assert not StallWatch(0).observe(True, 5, now=1e9)  # 0 disables it


def test_a_stalled_consumer_marks_its_worker_stopped_and_asks_for_a_restart(stack, micrograph):
    job = _planned(stack, micrograph)
    # beats far enough apart that a loaded machine never lets this worker's heartbeat expire
    # (3 missed beats): a worker judged dead registers again and gives its rows back itself,
    # before the reconcile this test is about
    stack.settings.heartbeat_seconds = 0.25
    stack.settings.reconcile_seconds = 0
    stack.settings.consumer_stall_seconds = 0.6
    stalled = []
    live = Liveness(lambda: stack, stall_probe=lambda: (True, 4),
                    on_stall=lambda: stalled.append(time.monotonic()))
    with live, ROWS_IN_FLIGHT.hold(job.id, 0):  # a row in flight (stuck with the consumer)
        deadline = time.monotonic() + 10
        while stack.worker_id not in stack.table.heartbeats.live():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert stack.table.rows.claim(job.id, 0, stack.worker_id, lease_seconds=600).claimed
        while not stalled:
            assert time.monotonic() < deadline, "the stalled consumer was never noticed"
            time.sleep(0.02)
        live._thread.join(2)
        assert not live._thread.is_alive()  # it stops beating
        assert stack.worker_id not in stack.table.heartbeats.live()  # marked stopped at once
        assert reconcile(stack) == [(job.id, 0)]  # its row goes to another worker
    assert len(stalled) == 1


def test_a_busy_or_healthy_consumer_is_never_judged_stalled(stack):
    stack.settings.heartbeat_seconds = 0.05
    stack.settings.consumer_stall_seconds = 0.2
    states = iter([(False, 9)] * 10 + [(True, 0)] * 10)
    stalled = []
    with Liveness(lambda: stack, beats_only=True, stall_probe=lambda: next(states, (True, 0)),
                  on_stall=lambda: stalled.append(1)) as live:
        deadline = time.monotonic() + 10
        while live.beats < 25:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert stalled == []


def _run_every_message(stack, expected_task: str, run) -> int:
    """Run every message sent (as the task layer would), each of ``expected_task``; how many."""
    runs = 0
    while stack.sent:
        task, *args = stack.sent.pop(0)
        assert task == expected_task
        run(stack, *args)
        runs += 1
    return runs


def test_planner_that_raises_on_every_attempt_fails_its_job(stack, micrograph, monkeypatch):
    import worker.stages.planning as planning

    def broken(*a, **k):
        raise RuntimeError("libvips crashed")

    monkeypatch.setattr(planning, "source_info", broken)
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    stack.sent.append((PLAN_TASK, job.id))
    runs = _run_every_message(stack, PLAN_TASK, plan_guarded)
    failed = stack.table.jobs.get(job.id)
    assert runs == stack.settings.max_attempts
    assert failed.status == JobStatus.FAILED
    assert "planner failed on attempt 3 of 3: RuntimeError: libvips crashed" in failed.error


def test_reducer_that_raises_on_every_attempt_fails_its_job(stack, micrograph, monkeypatch):
    import worker.stages.reducing as reducing

    job = _planned(stack, micrograph)
    for row in stack.table.rows.list(job.id):
        assert segment_row(stack, job.id, row.index) == "done"
    assert stack.sent == [(REDUCE_TASK, job.id)]

    def broken(*a, **k):
        raise RuntimeError("unable to call crop")

    monkeypatch.setattr(reducing, "write_pictures", broken)
    runs = _run_every_message(stack, REDUCE_TASK, reduce_guarded)
    failed = stack.table.jobs.get(job.id)
    assert runs == stack.settings.max_attempts
    assert failed.status == JobStatus.FAILED
    assert "reducer failed on attempt 3 of 3" in failed.error
    assert "unable to call crop" in failed.error


def test_a_dead_reducer_is_enqueued_again_and_a_live_one_is_not_duplicated(stack, micrograph):
    job = _planned(stack, micrograph)
    for row in stack.table.rows.list(job.id):
        segment_row(stack, job.id, row.index)
    stack.sent.clear()
    stack.table.heartbeats.register("reducer:1", interval=60)
    assert stack.table.jobs.claim_stage(job.id, [JobStatus.REDUCING], "reducer:1") == 1
    assert reduce_guarded(stack, job.id) is None  # a duplicate message while it runs: skipped
    assert stack.table.jobs.get(job.id).status == JobStatus.REDUCING
    reconcile(stack)
    assert stack.sent == []
    stack.table.heartbeats.stop("reducer:1")  # it dies
    reconcile(stack)
    assert stack.sent == [(REDUCE_TASK, job.id)]
    assert reduce_guarded(stack, job.id) is not None
    assert stack.table.jobs.get(job.id).status == JobStatus.SUCCEEDED


def test_a_job_left_running_by_a_dead_local_stack_can_be_resumed(stack, micrograph):
    job = _planned(stack, micrograph)
    assert segment_row(stack, job.id, 0) == "done"
    stack.table.heartbeats.register("w:1", interval=60)
    assert stack.table.rows.claim(job.id, 1, "w:1", lease_seconds=600).claimed
    service = SubmissionService(stack.settings, table=stack.table)
    with pytest.raises(TransitionError):  # a live worker holds a row: not abandoned
        service.resume(job.id, abandoned_ok=True)
    with pytest.raises(TransitionError):  # the API never resumes a running job
        service.resume(job.id)
    stack.table.heartbeats.stop("w:1")  # the stack dies: its lease is not live any more
    before = stack.table.rows.get(job.id, 0)
    resumed = service.resume(job.id, abandoned_ok=True)
    assert resumed.status == JobStatus.RUNNING
    after = stack.table.rows.get(job.id, 0)
    assert (after.status, after.checksum, after.finished_at) == \
        (RowStatus.DONE, before.checksum, before.finished_at)
    assert stack.table.rows.get(job.id, 1).status == RowStatus.PENDING


@pytest.mark.slow
def test_sigkilled_worker_is_recovered_by_the_other_worker_without_a_beat_process(
        tmp_path, tiny_package):
    """Two real ``celery worker`` processes on the embedded broker, no ``--beat`` and no
    reconciler in this test: one is SIGKILLed holding a row. Its 600 s lease would stall the
    job for ten minutes; the survivor's reconcile pass gives the row back once the dead worker
    misses three heartbeats."""
    import pyvips

    from queues.app import make_celery, send
    from storage.jobtable.engine import upgrade
    from tests.worker.conftest import DEMO_DATA, make_settings
    from worker.context import WorkerContext
    from worker.local import LocalWorkers

    tiles = [pyvips.Image.new_from_file(str(p)) for p in sorted(DEMO_DATA.glob("*.png"))]
    image = tmp_path / "tall.png"
    pyvips.Image.arrayjoin(tiles, across=1).crop(200, 0, 480, 1900).pngsave(str(image))
    settings = make_settings(tmp_path / "home", lease_seconds=600, heartbeat_seconds=1,
                             reconcile_seconds=2, torch_threads=1)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_celery(settings)
    ctx = WorkerContext.from_settings(settings, lambda task, *args: send(app, task, *args))
    ctx.models.publish(tiny_package)
    with LocalWorkers(settings, 2) as pool:
        job = (svc := SubmissionService(settings, app=app)).submit(svc.build_spec(str(image)))
        deadline = time.monotonic() + 240
        killed_at, victim = None, None
        while time.monotonic() < deadline:
            job = ctx.table.jobs.get(job.id)
            if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                break
            if killed_at is None and ctx.table.rows.progress(job.id).done >= 2:
                held = {r.worker: r.index for r in ctx.table.rows.list(job.id, [RowStatus.RUNNING])}
                for p in pool.procs:
                    w = next((w for w in held if w.endswith(f":{p.pid}")), None)
                    if w is None:
                        continue
                    # frozen first, so the row read next cannot finish before the kill (a
                    # loaded CI run once saw the victim finish its row in between)
                    os.kill(p.pid, signal.SIGSTOP)
                    row = ctx.table.rows.get(job.id, held[w])
                    if row.status != RowStatus.RUNNING or row.worker != w:
                        os.kill(p.pid, signal.SIGCONT)  # it finished meanwhile: try again
                        break
                    victim, victim_row = w, held[w]
                    p.kill()  # no replacement: the other worker must recover the row
                    p.wait()
                    killed_at = time.monotonic()
                    break
            time.sleep(0.1)
    assert killed_at is not None, "no worker was caught holding a row"
    print(f"kill to success: {time.monotonic() - killed_at:.1f} s (lease 600 s)")
    assert job.status == JobStatus.SUCCEEDED, job.error
    row = ctx.table.rows.get(job.id, victim_row)
    assert row.status == RowStatus.DONE and row.worker != victim and row.attempts == 2


def test_the_stall_probe_reads_the_consumers_queues_and_respects_busy_and_draining(monkeypatch):
    from types import SimpleNamespace

    from celery.worker import state

    import queues.depths
    import worker.spot
    from worker.tasks import stall_probe

    asked = []
    monkeypatch.setattr(queues.depths, "queue_depths",
                        lambda app, names: asked.append(sorted(names)) or dict.fromkeys(names, 2))
    consumer = SimpleNamespace(app=object(), task_consumer=SimpleNamespace(
        queues=[SimpleNamespace(name="p-rows"), SimpleNamespace(name="p-plan")]))
    probe = stall_probe(consumer)
    assert probe() == (True, 4) and asked == [["p-plan", "p-rows"]]
    class Request:  # celery keeps requests in weak sets
        id = "r1"

    request = Request()
    state.reserved_requests.add(request)
    try:
        assert probe() == (False, 0)  # holding a message: busy, the broker is not asked
    finally:
        state.reserved_requests.discard(request)
    assert len(asked) == 1
    monkeypatch.setattr(worker.spot, "draining", lambda: True)
    assert stall_probe(consumer)() == (False, 0)  # a spot notice stopped the consumer
