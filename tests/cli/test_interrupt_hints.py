"""What ``pelletseg run`` prints after Ctrl-C (``cli.interrupts``): the command that continues
what has not ended, none for what has."""

from __future__ import annotations

from pathlib import Path

from cli.interrupts import batch_resume_hint, resume_hint

HOME = Path("/data/lab")


def test_one_job_gets_its_resume_and_cancel_commands_unless_it_ended():
    hint = resume_hint("j1", HOME, "interrupted")
    assert "pelletseg resume j1 --home /data/lab" in hint
    assert "pelletseg cancel j1 --home /data/lab" in hint
    assert resume_hint("j1", HOME, "succeeded") == "job j1 succeeded"


def test_a_batch_gets_each_status_and_one_command_for_all_its_jobs():
    hint = batch_resume_hint("b7", HOME, {"j1": "succeeded", "j2": "interrupted"})
    lines = hint.splitlines()
    assert lines[:2] == ["job j1 succeeded", "job j2 interrupted"]
    assert "continue them with:  pelletseg resume --batch b7 --home /data/lab" in lines
    assert "or drop them with:   pelletseg cancel --batch b7 --home /data/lab" in lines
    assert "pelletseg resume j" not in hint


def test_a_batch_whose_jobs_all_ended_meanwhile_gets_no_command():
    hint = batch_resume_hint("b7", HOME, {"j1": "succeeded", "j2": "failed"})
    assert hint.splitlines() == ["job j1 succeeded", "job j2 failed"]
