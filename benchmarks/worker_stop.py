"""How long idle local workers take to leave after SIGTERM (a warm shutdown), per broker.

``pelletseg run`` ends by stopping its workers, Kubernetes sends SIGTERM on every scale-down,
and the tests stop a stack after nearly every job: an idle worker that notices its shutdown
flag late costs that much each time. For each run: N ``celery worker`` processes
(:class:`worker.local.LocalWorkers`) on the broker named by ``PELLETSEG_BROKER_URL`` (the
embedded SQLite broker by default), started on a fresh home, left idle 2 s after every one
is ready, then SIGTERMed together; reported: seconds from the signal to the last exit, and
the exit codes (0: a warm shutdown that finished by itself).

Run: ``python -m benchmarks.worker_stop [--workers N] [--runs R]`` (prints one JSON line).
For SQS, also set ``PELLETSEG_BROKER_TRANSPORT_OPTIONS`` as tests/worker/conftest.py's
``sqs_settings`` does.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["main", "measure"]


def measure(home: Path, workers: int) -> dict:
    """One start, idle wait and SIGTERM of ``workers`` local workers under ``home``.

    Returns:
        ``{"seconds": from SIGTERM to the last exit (s), "exit_codes": [...]}``.

    Raises:
        TimeoutError: the workers were not all ready within 120 s.
    """
    from core.settings import Settings
    from submission import prepare
    from worker.local import LocalWorkers

    settings = Settings(home=home, queue_prefix=f"stop{uuid.uuid4().hex[:8]}-")
    prepare(settings)
    with LocalWorkers(settings, workers) as pool:
        logs = [settings.home / "logs" / f"worker-{i}.log" for i in range(len(pool.procs))]
        deadline = time.monotonic() + 120
        while not all(p.exists() and "ready." in p.read_text(errors="replace") for p in logs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers under {home} not ready after 120 s")
            time.sleep(0.1)
        time.sleep(2.0)
        started = time.perf_counter()
        for p in pool.procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait() for p in pool.procs]
        return {"seconds": round(time.perf_counter() - started, 3), "exit_codes": codes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    from core.settings import Settings
    from queues.names import broker_kind

    runs = []
    with tempfile.TemporaryDirectory(prefix="pelletseg-stop-") as tmp:
        for i in range(args.runs):
            runs.append(measure(Path(tmp) / f"home-{i}", args.workers))
    print(json.dumps({"broker": broker_kind(Settings(home=Path(tmp)).resolved_broker_url),
                      "workers": args.workers, "runs": runs,
                      "median_s": statistics.median(r["seconds"] for r in runs)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
