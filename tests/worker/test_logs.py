"""The worker's log: structlog events at their own level through Celery's logging, libvips'
INFO chatter only at DEBUG (a real Celery logging setup, in a child process)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from worker.logs import configure_structlog, quiet_libvips, render

ROOT = Path(__file__).resolve().parents[2]

# What a worker process does: import the app (worker.tasks), let Celery set up its logging
# at --loglevel, then log structlog events and run a libvips pipeline.
CHILD = """
import sys
import pyvips, structlog
from worker.tasks import app
app.log.setup_logging_subsystem(loglevel=sys.argv[1])
log = structlog.get_logger("worker.stages.example")
log.info("example.info", job="j1", note="two words")
log.warning("example.warning", rows=3)
log.debug("example.debug")
pyvips.Image.black(400, 400).gaussblur(2).avg()
"""


def child_log(tmp_path, level: str) -> str:
    env = {**os.environ, "PELLETSEG_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, level], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_worker_logs_events_at_their_level_and_silences_libvips_info(tmp_path):
    text = child_log(tmp_path, "INFO")
    assert "INFO/MainProcess] example.info job=j1 note='two words'" in text, text
    assert "WARNING/MainProcess] example.warning rows=3" in text, text
    assert "example.debug" not in text and "threadpool completed" not in text, text


def test_worker_at_debug_shows_libvips_threadpools(tmp_path):
    text = child_log(tmp_path, "DEBUG")
    assert "DEBUG/MainProcess] example.debug" in text, text
    assert "threadpool completed" in text, text


def test_render_and_levels_in_process(caplog):
    try:
        configure_structlog()
        with caplog.at_level(logging.INFO, logger="worker.stages.x"):
            structlog.get_logger("worker.stages.x").info("row.done", job="j", empty="")
            structlog.get_logger("worker.stages.x").debug("row.hidden")
        records = [r for r in caplog.records if r.name == "worker.stages.x"]
        assert [(r.levelno, r.getMessage()) for r in records] == [
            (logging.INFO, "row.done job=j empty=''")]
    finally:
        structlog.reset_defaults()
    assert render(None, "info", {"event": "e", "a": 1}) == "e a=1"


@pytest.mark.parametrize("level, expected", [(logging.DEBUG, logging.DEBUG), ("INFO", logging.WARNING),
                                             (logging.WARNING, logging.WARNING)])
def test_quiet_libvips(level, expected):
    before = logging.getLogger("pyvips").level
    try:
        quiet_libvips(level)
        assert logging.getLogger("pyvips").level == expected
    finally:
        logging.getLogger("pyvips").setLevel(before)
