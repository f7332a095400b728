"""The Celery tasks of :mod:`worker.tasks`, called in this process on an app without a broker:
what every stage task does before its stage runs."""

from __future__ import annotations

import pytest
import pyvips
from celery import Celery

from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK, STITCH_TASK
from worker.tasks import register_tasks


def _buffer() -> bytes:
    return pyvips.ffi.string(pyvips.vips_lib.vips_error_buffer())


class _Recorder:
    """A delivery policy that runs nothing and records libvips' error buffer when asked to
    run a stage."""

    def __init__(self):
        self.buffers: list[bytes] = []

    def run(self, task, stage, judge, give_up=None):
        self.buffers.append(_buffer())
        return None


@pytest.mark.parametrize("name,args", [(PLAN_TASK, ("j",)), (ROW_TASK, ("j", 0)),
                                       (REDUCE_TASK, ("j",)), (STITCH_TASK, ("j",))])
def test_each_task_starts_with_an_empty_libvips_error_buffer(tmp_path, name, args):
    """libvips keeps messages of calls that returned (a loader probing a file) in a
    process-wide buffer that pyvips empties only when it raises: a job's libvips error would
    otherwise carry text of an earlier job of the worker, another user's file names included."""
    seen: list[bytes] = []

    def context():  # the stitch task's stage needs a context: record and stop it there
        seen.append(_buffer())
        raise RuntimeError("no context in this test")

    app, delivery = Celery("test-tasks"), _Recorder()
    register_tasks(app, context, delivery)
    probe = bytes(tmp_path / "earlier-job-") + b"\xa9.tif"
    assert pyvips.vips_lib.vips_foreign_find_load(probe) == pyvips.ffi.NULL
    assert b"earlier-job-" in _buffer()
    app.tasks[name](*args)
    assert delivery.buffers + seen == [b""]
