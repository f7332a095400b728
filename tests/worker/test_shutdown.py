"""How soon an idle worker looks at its shutdown flag after SIGTERM: the event loop of a
Redis, RabbitMQ or SQS worker gets a repeating timer from ``worker_ready``
(:func:`worker.tasks.wire_worker_signals`); the embedded broker's blocking loop is covered in
tests/queues/test_app.py. Checked in a fresh interpreter (worker_ready starts threads)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_event_loop_worker_polls_at_most_shutdown_check_seconds(tmp_path):
    code = (
        "import json, time\n"
        "from types import SimpleNamespace\n"
        "from celery.signals import worker_ready\n"
        "from kombu.asynchronous import Hub\n"
        "from kombu.asynchronous.timer import Timer\n"
        "from core.settings import Settings\n"
        "from queues.app import make_celery\n"
        "from queues.embedded import SHUTDOWN_CHECK_SECONDS\n"
        "from worker.tasks import _look_at_shutdown_flag, wire_worker_signals\n"
        f"settings = Settings(home={str(tmp_path)!r})\n"
        "app = make_celery(settings)\n"
        "wire_worker_signals(app, settings, lambda: None)\n"
        "pool = type('Pool', (), {'__module__': 'celery.concurrency.solo'})()\n"
        "class Consumer:  # what worker_ready sends: app, pool, controller (hashable)\n"
        "    def __init__(self, hub):\n"
        "        self.app, self.pool = app, pool\n"
        "        self.controller = SimpleNamespace(hub=hub, concurrency=1)\n"
        "hub = Hub(Timer(max_interval=10.0))  # as celery.worker.components.Timer\n"
        "hub.call_later(9.0, lambda: None)  # e.g. a broker's own timer, 9 s away\n"
        "before = hub.fire_timers()\n"
        "worker_ready.send(sender=Consumer(hub))\n"
        "worker_ready.send(sender=Consumer(None))  # the embedded broker's loop: no hub\n"
        "time.sleep(SHUTDOWN_CHECK_SECONDS)\n"
        "first = hub.fire_timers()  # fires the wake-up timer, which enters itself again\n"
        "time.sleep(SHUTDOWN_CHECK_SECONDS)\n"
        "second = hub.fire_timers()\n"
        "funs = [getattr(s.entry.fun, '__wrapped__', s.entry.fun) for s in hub.timer.queue]\n"
        "print(json.dumps({'before': before, 'first': first, 'second': second,\n"
        "  'check': SHUTDOWN_CHECK_SECONDS, 'entries': len(funs),\n"
        "  'ours': sum(f is _look_at_shutdown_flag for f in funs)}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] > 8  # the poll would sleep until the 9 s timer
    assert 0 < got["check"] <= 1
    # after worker_ready, each poll returns within SHUTDOWN_CHECK_SECONDS, again and again
    assert 0 <= got["first"] <= got["check"] and 0 <= got["second"] <= got["check"]
    assert got["entries"] == 2 and got["ours"] == 1
