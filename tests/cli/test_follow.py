"""``cli.run.follow``: one progress bar per job, all followed at once, on a scripted job table
(each poll advances the jobs by one step of their script); what ``cli.run._report`` says of a
job that did not succeed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cli import run as run_mod
from core.states import JobStatus


class ScriptedTable:
    """``jobs.get`` and ``rows.progress`` of a job table whose jobs follow a script: one
    ``(status, rows_done)`` step per call of :meth:`step`."""

    def __init__(self, scripts: dict[str, list[tuple[JobStatus, int]]], rows_total: int = 4):
        self.scripts, self.rows_total, self.t = scripts, rows_total, 0
        self.jobs = SimpleNamespace(get=self._job)
        self.rows = SimpleNamespace(progress=self._progress)
        self.gets: list[str] = []
        self.warnings: dict[str, list[dict]] = {}  # stored by the planner: from "running" on

    def step(self) -> None:
        self.t += 1

    def _now(self, job_id):
        script = self.scripts[job_id]
        return script[min(self.t, len(script) - 1)]

    def _job(self, job_id):
        self.gets.append(job_id)
        status, _ = self._now(job_id)
        planned = status != JobStatus.QUEUED
        return SimpleNamespace(id=job_id, status=status,
                               rows_total=self.rows_total if planned else None,
                               outputs={"warnings": self.warnings.get(job_id, [])} if planned
                               else None)

    def _progress(self, job_id):
        return SimpleNamespace(done=self._now(job_id)[1], pixels_done=self._now(job_id)[1] * 10)


Q, R, S, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED


def test_follow_watches_every_job_at_once_and_returns_them_in_order(capsys):
    table = ScriptedTable({
        "aaaaaaaa-1": [(Q, 0), (R, 1), (R, 3), (R, 4), (R, 4), (S, 4)],
        "bbbbbbbb-2": [(R, 2), (F, 2)],  # ends first: still returned second
    })
    ended = run_mod.follow(table, ["aaaaaaaa-1", "bbbbbbbb-2"], None, poll=0, tick=table.step,
                           tick_every=0)
    assert [(j.id, j.status) for j in ended] == [("aaaaaaaa-1", S), ("bbbbbbbb-2", F)]
    # both were polled from the start (not one after the other), the ended one no more
    assert table.gets[:2] == ["aaaaaaaa-1", "bbbbbbbb-2"]
    assert table.gets.count("bbbbbbbb-2") == 2 and table.gets.count("aaaaaaaa-1") == 6
    out = capsys.readouterr().out
    assert "aaaaaaaa succeeded" in out and "bbbbbbbb failed" in out and "4/4" in out


def test_follow_prints_a_jobs_warnings_once_as_soon_as_it_is_planned(capsys):
    table = ScriptedTable({"aaaaaaaa-1": [(Q, 0), (R, 1), (R, 3), (S, 4)],
                           "bbbbbbbb-2": [(R, 1), (S, 4)]})
    table.warnings["aaaaaaaa-1"] = [{"code": "pixel_size_unlike_model",
                                     "message": "pixel size 1.000 µm/px is 2.0 x coarser"}]
    run_mod.follow(table, ["aaaaaaaa-1", "bbbbbbbb-2"], None, poll=0, tick=table.step,
                   tick_every=0)
    out = capsys.readouterr().out
    assert out.count("aaaaaaaa warning: pixel size 1.000 µm/px is 2.0 x coarser") == 1, out
    assert "bbbbbbbb warning" not in out


def test_follow_of_one_job_labels_its_bar_with_the_status_alone(capsys):
    table = ScriptedTable({"cccccccc-3": [(R, 2), (JobStatus.INTERRUPTED, 2)]})
    [job] = run_mod.follow(table, ["cccccccc-3"], None, poll=0, tick=table.step, tick_every=0)
    assert job.status == JobStatus.INTERRUPTED
    out = capsys.readouterr().out
    assert "interrupted" in out and "cccccccc" not in out


def test_follow_stops_when_every_local_worker_died(monkeypatch):
    table = ScriptedTable({"dddddddd-4": [(R, 1)]})
    workers = SimpleNamespace(alive=lambda: 0, settings=None)
    monkeypatch.setattr(run_mod, "log_tail", lambda settings, lines=20: "worker 1: Killed")
    with pytest.raises(run_mod.WorkersExited,
                       match=r"local workers exited before the jobs ended; .*\nworker 1: Killed"):
        run_mod.follow(table, ["dddddddd-4"], workers, poll=0)


@pytest.mark.parametrize("status, error, outputs, lines", [
    (F, "row 2 failed after 3 attempts: gone", None, [
        "job eeeeeeee-5 failed: row 2 failed after 3 attempts: gone",
        "fix the cause, then: pelletseg resume eeeeeeee-5 --home /h"]),
    (JobStatus.CANCELLED, None, None, [
        "job eeeeeeee-5 cancelled", "to continue it: pelletseg resume eeeeeeee-5 --home /h"]),
    # refused at planning: its spec must change, so a rerun with what the planner stored
    (F, "mount.ome.tif: an OME-TIFF of 2 images", {"scenes": [1, 2]}, [
        "job eeeeeeee-5 failed: mount.ome.tif: an OME-TIFF of 2 images",
        "then: pelletseg rerun eeeeeeee-5 --scene N (N: one of 1, 2) --home /h"]),
    (F, "c.tif: a 16-bit image", {"significant_bits_suggested": 14}, [
        "job eeeeeeee-5 failed: c.tif: a 16-bit image",
        "then: pelletseg rerun eeeeeeee-5 --significant-bits 14 --home /h"]),
])
def test_report_of_a_job_that_did_not_succeed(capsys, status, error, outputs, lines):
    job = SimpleNamespace(id="eeeeeeee-5", status=status, error=error, outputs=outputs)
    run_mod._report(SimpleNamespace(home="/h"), None, job, None)
    assert capsys.readouterr().out.splitlines() == lines
