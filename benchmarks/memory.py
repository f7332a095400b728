"""Peak RSS of a row worker and of the reducer, per image size.

For each size (0.1, 0.35, 1 Gpx) a square mosaic of real micrographs is written as a tiled
JPEG BigTIFF and planned as a job on a local stack. Then, each in a fresh process that has
imported what a ``celery worker`` imports (``worker.tasks``), so its VmHWM is a worker's:

- **worker**: ``segment_row`` on one interior row. A row's memory depends on the image
  width, not its height (a row holds one strip of the full width), so one representative
  row stands for the whole image: segmenting every row of 1 Gpx on 2 CPU cores would take
  about an hour.
- **reducer**: ``reduce_job`` on the full image, after every other row has been given a
  synthetic checkpoint (a copy of the real row's labels, so the label statistics are real)
  and marked done through the job table, as workers would have.

Run as ``python -m benchmarks.memory worker JOB ROW`` / ``... reducer JOB`` with the stack's
``PELLETSEG_*`` environment; prints one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.config import BenchConfig
from benchmarks.inputs import mosaic
from benchmarks.timing import peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]


def _child(settings, *args: str, timeout: float) -> dict:
    from worker.local import settings_env

    env = settings_env(settings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    res = subprocess.run([sys.executable, "-m", "benchmarks.memory", *args], env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"memory run {args} failed ({res.returncode}):\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return json.loads(lines[-1])


def _complete_other_rows(ctx, job_id: str, measured: int) -> None:
    """Give every row but ``measured`` a checkpoint holding the measured row's labels (cut or
    repeated to the row's height) and mark it done through the job table."""
    from imaging.stitching import read_strip, write_strip
    from microstructure.fractions import label_counts
    from storage.blobs.layout import row_key

    job = ctx.table.jobs.get(job_id)
    n_classes = ctx.models.meta(job.model_name, job.model_version).n_classes
    real = read_strip(ctx.local_blob(row_key(job_id, measured)))
    written: dict[int, tuple[Path, list[int], str]] = {}  # height -> file, counts, checksum
    scratch = ctx.cache_dir / "bench-synthetic"
    scratch.mkdir(parents=True, exist_ok=True)
    for row in ctx.table.rows.list(job_id):
        if row.index == measured:
            continue
        h = row.y1 - row.y0
        if h not in written:
            labels = np.resize(real, (h, real.shape[1])) if h > real.shape[0] else real[:h]
            path = scratch / f"rows-{h}.tif"
            write_strip(np.ascontiguousarray(labels), path)
            written[h] = (path, label_counts(labels, n_classes),
                          hashlib.sha256(labels.tobytes()).hexdigest())
        path, counts, checksum = written[h]
        key = row_key(job_id, row.index)
        ctx.blobs.put_file(key, path)
        ctx.table.rows.claim(job_id, row.index, "bench-synthetic", 3600)
        ctx.table.rows.complete(job_id, row.index, counts=counts, checksum=checksum,
                              blob_key=key, seconds=0.0)


def measure_size(cfg: BenchConfig, package: Path, gpx: float, work: Path, threads: int) -> dict:
    """Worker and reducer peak RSS for a ``gpx`` gigapixel square mosaic.

    Returns:
        Image side, the measured row and its width, peak RSS (MiB) and seconds of the worker
        row and of the reducer.

    Raises:
        RuntimeError: a measuring process failed (its output is in the message).
    """
    from benchmarks.pipeline import stack_settings
    from models import read_package
    from submission import SubmissionService, prepare
    from worker.context import WorkerContext
    from worker.stages.planning import plan_job

    side = max(cfg.tile_size, round(math.sqrt(gpx * 1e9)))
    image = mosaic(cfg.work_dir, side)
    pkg = read_package(package)
    settings = stack_settings(cfg, work / f"memory-{side}", pkg.name).model_copy(
        update={"torch_threads": threads, "rows_in_flight": 1})
    prepare(settings).publish(package)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)  # stages run here
    job = ctx.table.jobs.create(SubmissionService(settings, table=ctx.table).build_spec(str(image)))
    plan_job(ctx, job.id)
    rows = ctx.table.jobs.get(job.id).rows_total
    index = rows // 2
    timeout = cfg.timeout_s
    worker = _child(settings, "worker", job.id, str(index), timeout=timeout)
    if worker["outcome"] != "done":
        raise RuntimeError(f"memory row {index} of {side} px: {worker['outcome']}")
    _complete_other_rows(ctx, job.id, index)
    reducer = _child(settings, "reducer", job.id, timeout=timeout)
    if not reducer["outcome"]:
        raise RuntimeError(f"reducer of {side} px did not finish: {ctx.table.jobs.get(job.id).error}")
    return {
        "gpx": round(side * side / 1e9, 3), "side": side, "rows": rows, "row": index,
        "row_tiles": math.ceil(side / cfg.stride), "threads": threads,
        "worker_rss_mib": round(worker["peak_rss_mib"]), "worker_row_s": worker["seconds"],
        "reducer_rss_mib": round(reducer["peak_rss_mib"]), "reducer_s": reducer["seconds"],
    }


def main(argv: list[str]) -> None:
    """Child process entry: ``worker JOB ROW`` or ``reducer JOB``; prints one JSON line."""
    import worker.tasks  # noqa: F401 - load what a celery worker process has loaded
    from core.settings import get_settings
    from worker.context import WorkerContext

    ctx = WorkerContext.from_settings(get_settings(), enqueue=lambda *a: None)
    started = time.perf_counter()
    if argv[0] == "worker":
        from worker.stages.segmenting import segment_row

        outcome = segment_row(ctx, argv[1], int(argv[2]))
    elif argv[0] == "reducer":
        from worker.stages.reducing import reduce_job

        outcome = reduce_job(ctx, argv[1]) is not None
    else:
        raise SystemExit(f"unknown memory run {argv[0]!r}: use worker or reducer")
    print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - started,
                      "peak_rss_mib": peak_rss_mib()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
