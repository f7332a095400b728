"""The background imports a worker starts with (worker/preload.py), checked in fresh
interpreters, where nothing has imported them yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_preload_imports_the_lazy_modules_in_a_daemon_thread():
    got = _fresh(
        "import json, sys\n"
        "from worker.preload import PRELOADED_MODULES, start_preload\n"
        "before = [m for m in PRELOADED_MODULES if m in sys.modules]\n"
        "t = start_preload(); t.join(60)\n"
        "import matplotlib\n"
        "print(json.dumps({'before': before, 'daemon': t.daemon, 'name': t.name,\n"
        "  'after': [m for m in PRELOADED_MODULES if m in sys.modules],\n"
        "  'backend': matplotlib.get_backend().lower()}))\n")
    assert got["before"] == []  # importing worker.preload itself loads neither
    assert got["after"] == ["matplotlib.figure", "scipy.ndimage", "ome_types"]
    assert got["daemon"] and got["name"] == "pelletseg-preload" and got["backend"] == "agg"


def test_the_worker_that_runs_tasks_preloads_and_a_prefork_parent_does_not():
    code = (
        "import json, sys, threading\n"
        "from celery.signals import worker_process_init, worker_ready\n"
        "from core.settings import Settings\n"
        "from queues.app import make_celery\n"
        "from worker.tasks import wire_worker_signals\n"
        "settings = Settings(home='/tmp/pelletseg-preload-test')\n"
        "app = make_celery(settings)\n"
        "wire_worker_signals(app, settings, lambda: None)\n"
        "class Consumer:\n"
        "    def __init__(self, module):\n"
        "        self.app, self.pool = app, type('Pool', (), {'__module__': module})()\n"
        "sender = Consumer\n"
        "def started():\n"
        "    return [t for t in threading.enumerate() if t.name == 'pelletseg-preload']\n"
        "worker_ready.send(sender=sender('celery.concurrency.prefork'))\n"
        "parent = len(started())\n"
        "worker_process_init.send(sender=None)  # in the worker's own process: not a child\n"
        "own = len(started())\n"
        "worker_ready.send(sender=sender('celery.concurrency.solo'))\n"
        "solo = started()\n"
        "[t.join(60) for t in solo]\n"
        "print(json.dumps({'parent': parent, 'own': own, 'solo': len(solo),\n"
        "  'loaded': 'scipy.ndimage' in sys.modules}))\n")
    got = _fresh(code)
    assert got == {"parent": 0, "own": 0, "solo": 1, "loaded": True}
