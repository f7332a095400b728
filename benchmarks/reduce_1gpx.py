"""Cost of the microstructure step at 1 Gpx: the whole reducer with and without it, and the
row worker's extra time and memory for one row partial.

No model runs: a job is planned on a local stack over a real-micrograph mosaic (the overlay
and preview read it, as in production), and every row is given a synthetic label strip
(:mod:`microstructure.synthetic`: pellets in epoxy with magnetite cores, hematite shells and
pores, plus ``--noise-per-mpx`` isolated one-pixel pores per Mpx so that the object count is
like a real, noisy prediction's) as its checkpoint, with its microstructure partial computed
as ``segment_row`` does, and marked done through the job table. Then, each in a fresh process
that has imported what a ``celery worker`` imports (``worker.tasks``), so its VmHWM is a
worker's:

- **partial**: :func:`microstructure.row_partial` on one full-width interior strip (the row
  worker's extra step): seconds and VmHWM before and after;
- **reducer without microstructure**: ``reduce_job`` with the microstructure step left out
  (today's reducer: pictures, fractions, uploads);
- **reducer with microstructure**: ``reduce_job`` as shipped (partials read and merged,
  outputs rendered);
- **reducer recomputing the partials**: the same with every partial deleted first (a job
  whose rows ran before partials existed: the reducer recomputes them from the checkpoints).

With ``--worker``: ``segment_row`` with the bundled model on two neighbouring interior rows of
the mosaic, each in a fresh process, one with the row partial left out and one as shipped
(peak RSS and seconds of the whole row).

Run: ``flock /work/heavy.lock nice -n 5 python -m benchmarks.reduce_1gpx [--side 31623]
[--work DIR] [--json FILE] [--worker]``; prints one JSON document. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench-synthetic"


def _section(side: int, seed: int = 0):
    """A square synthetic section of ``side`` px: a grid of pellets (radius ~ side / 13),
    each with ``pores_per_pellet`` pores."""
    from microstructure.synthetic import make_section

    n = max(1, side // 6300)
    pitch = side // n
    radius = int(pitch * 0.44)
    pellets = [(pitch // 2 + i * pitch, pitch // 2 + j * pitch, radius, max(1, radius // 5))
               for i in range(n) for j in range(n)]
    return make_section(side, side, pellets, pores_per_pellet=400, max_pore_px=40, seed=seed)


def _strip(section, y0: int, y1: int, noise_per_mpx: float, seed: int) -> np.ndarray:
    """Rows [y0, y1) of the section with isolated one-pixel pores sprinkled inside pellets."""
    from microstructure.synthetic import EPOXY, PORE

    labels = section.render(y0, y1)
    rng = np.random.default_rng(seed)
    n = int(labels.size * noise_per_mpx / 1e6)
    ys = rng.integers(0, labels.shape[0], n)
    xs = rng.integers(0, labels.shape[1], n)
    keep = labels[ys, xs] != EPOXY
    labels[ys[keep], xs[keep]] = PORE
    return labels


def _package(folder: Path) -> Path:
    """A model package of the synthetic classes (roles mount, pore, phase, phase); its weights
    file is a placeholder: the reducer reads model.json only."""
    from microstructure.synthetic import SYNTHETIC_CLASSES
    from models.package import MODEL_JSON, WEIGHTS_FILE

    folder.mkdir(parents=True, exist_ok=True)
    (folder / WEIGHTS_FILE).write_bytes(b"bench: no weights")
    sha = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    meta = {"name": MODEL, "version": "1", "tile_size": 1728, "halo": 96,
            "classes": [{"index": c.value, "name": c.name, "rgb": list(c.colour),
                         "label_value": c.value, "role": c.role} for c in SYNTHETIC_CLASSES],
            "weights_sha256": sha}
    (folder / MODEL_JSON).write_text(json.dumps(meta))
    return folder


def _child(settings, *args: str, timeout: float = 3600) -> dict:
    from worker.local import settings_env

    env = settings_env(settings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    res = subprocess.run([sys.executable, "-m", "benchmarks.reduce_1gpx", "child", *args],
                         env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"run {args} failed ({res.returncode}):\n{res.stdout[-2000:]}\n"
                           f"{res.stderr[-4000:]}")
    return json.loads(lines[-1])


def _progress(what: str, value) -> None:
    """One progress line on stderr (a long run shows its figures as they come)."""
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {what}: {json.dumps(value)}",
          file=sys.stderr, flush=True)


def _set_reducing(ctx, job_id: str) -> None:
    from sqlalchemy import update

    from core.states import JobStatus
    from storage.jobtable.tables import Job

    with ctx.table.jobs._tx() as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.REDUCING.value))


def run(side: int, work: Path, noise_per_mpx: float) -> dict:
    """Build the job and measure (see the module docstring); returns the figures."""
    from benchmarks.inputs import mosaic
    from core.settings import Settings
    from imaging.stitching import write_strip
    from microstructure.fractions import label_counts
    from storage.blobs.layout import ROW_CHECKPOINT_TAG, row_key, row_partial_key
    from submission import SubmissionService, prepare
    from worker.context import WorkerContext
    from worker.stages.measuring import write_row_partial
    from worker.stages.planning import plan_job

    t0 = time.perf_counter()
    image = mosaic(work, side)
    mosaic_s = time.perf_counter() - t0
    _progress("mosaic_s", round(mosaic_s, 1))
    home = work / f"reduce-{side}"
    settings = Settings(home=home, tile_size=1728, halo=96, rows_per_task=1,
                        default_model=MODEL, lease_seconds=3600)
    prepare(settings).publish(_package(work / "pkg" / MODEL / "1"))
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    job = ctx.table.jobs.create(SubmissionService(settings, table=ctx.table).build_spec(
        str(image), pixel_size_um=0.5))
    plan_job(ctx, job.id)
    job = ctx.table.jobs.get(job.id)
    pkg = ctx.models.meta(job.model_name, job.model_version)
    section = _section(side)
    rows = ctx.table.rows.list(job.id)
    scratch = home / "bench-rows"
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    partial_s = []
    for row in rows:
        labels = _strip(section, row.y0, row.y1, noise_per_mpx, seed=row.index)
        path = scratch / "strip.tif"
        write_strip(labels, path)
        key = row_key(job.id, row.index)
        ctx.blobs.put_file(key, path, tags=ROW_CHECKPOINT_TAG)
        started = time.perf_counter()
        write_row_partial(ctx, job, row.index, row.y0, labels, pkg)
        partial_s.append(time.perf_counter() - started)
        _progress(f"row {row.index} partial_s", round(partial_s[-1], 2))
        ctx.table.rows.claim(job.id, row.index, "bench-synthetic", 3600)
        ctx.table.rows.complete(job.id, row.index, counts=label_counts(labels, pkg.n_classes),
                                checksum=hashlib.sha256(labels.tobytes()).hexdigest(),
                                blob_key=key, seconds=0.0)
    build_s = time.perf_counter() - t0
    middle = rows[len(rows) // 2]
    partial = _child(settings, "partial", job.id, str(middle.index))
    _progress("partial", partial)
    runs = {}
    for name, args in (("without", ("--no-micro",)), ("with", ()), ("recompute", ())):
        if name == "recompute":
            for r in rows:
                ctx.blobs.delete(row_partial_key(job.id, r.index))
        _set_reducing(ctx, job.id)
        runs[name] = _child(settings, "reducer", job.id, *args)
        _progress(f"reducer {name}", runs[name])
    report = json.loads(ctx.blobs.get_bytes(f"jobs/{job.id}/microstructure.json"))
    return {
        "side": side, "gpx": round(side * side / 1e9, 3), "rows": len(rows),
        "strip_px": [middle.y1 - middle.y0, side], "noise_per_mpx": noise_per_mpx,
        "pellets": len(report["pellets"]),
        "objects": {k: v["count"] for k, v in report["size_distributions"].items()},
        "mosaic_s": round(mosaic_s, 1), "rows_build_s": round(build_s, 1),
        "row_partial_s_in_process": [round(min(partial_s), 2), round(max(partial_s), 2)],
        "partial": partial, "reducer": runs,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def run_worker(side: int, work: Path) -> dict:
    """``segment_row`` with the bundled model on two neighbouring interior rows of the mosaic,
    each in a fresh process after a warm-up row that caches the exported graph: one with the
    row partial left out, one as shipped."""
    from benchmarks.inputs import mosaic
    from core.settings import Settings
    from submission import SubmissionService, prepare
    from worker.context import WorkerContext
    from worker.stages.planning import plan_job

    image = mosaic(work, side)
    settings = Settings(home=work / f"worker-{side}", rows_per_task=1, lease_seconds=3600,
                        rows_in_flight=1)
    prepare(settings)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    job = ctx.table.jobs.create(SubmissionService(settings, table=ctx.table).build_spec(
        str(image)))
    plan_job(ctx, job.id)
    n = ctx.table.jobs.get(job.id).rows_total
    out = {}
    # row 0 first: it exports and caches the runtime's graph, which the measured rows reuse
    for name, index, args in (("warm-up (row 0, exports the graph)", 0, ("--no-micro",)),
                              ("without", n // 2, ("--no-micro",)), ("with", n // 2 + 1, ())):
        out[name] = _child(settings, "worker", job.id, str(index), *args)
        _progress(f"worker {name}", out[name])
    return out


def child(argv: list[str]) -> None:
    """Child process entry: ``partial JOB ROW``, ``reducer JOB [--no-micro]`` or ``worker JOB
    ROW [--no-micro]``."""
    import worker.tasks  # noqa: F401 - load what a celery worker process has loaded
    from benchmarks.timing import peak_rss_mib
    from core.settings import get_settings
    from worker.context import WorkerContext

    ctx = WorkerContext.from_settings(get_settings(), enqueue=lambda *a: None)
    if argv[0] == "partial":
        from imaging.stitching import read_strip
        from microstructure import row_partial
        from storage.blobs.layout import row_key
        from worker.stages.measuring import micro_classes

        job = ctx.table.jobs.get(argv[1])
        row = ctx.table.rows.get(job.id, int(argv[2]))
        classes = micro_classes(ctx.models.meta(job.model_name, job.model_version))
        labels = read_strip(ctx.local_blob(row_key(job.id, row.index)))
        imported = peak_rss_mib()
        import scipy.ndimage  # noqa: F401 - imported by the first row_partial of a worker

        before = peak_rss_mib()
        started = time.perf_counter()
        part = row_partial(labels, y0=row.y0, image_shape=(job.height, job.width),
                           classes=classes)
        seconds = time.perf_counter() - started
        out = {"seconds": round(seconds, 3), "rss_before_scipy_mib": round(imported),
               "rss_before_mib": round(before),
               "rss_after_mib": round(peak_rss_mib()), "strip_mib": round(labels.nbytes / 2**20),
               "partial_kib": round(len(part.to_bytes()) / 1024)}
    elif argv[0] == "reducer":
        import worker.stages.reducing as reducing

        if "--no-micro" in argv:
            reducing.write_microstructure = lambda *a, **k: None  # today's reducer
        started = time.perf_counter()
        outcome = reducing.reduce_job(ctx, argv[1]) is not None
        out = {"outcome": outcome, "seconds": round(time.perf_counter() - started, 2),
               "peak_rss_mib": round(peak_rss_mib())}
    elif argv[0] == "worker":
        import worker.stages.segmenting as segmenting

        if "--no-micro" in argv:
            segmenting.write_row_partial = lambda *a, **k: None  # the row before issue 14
        started = time.perf_counter()
        outcome = segmenting.segment_row(ctx, argv[1], int(argv[2]))
        out = {"outcome": outcome, "seconds": round(time.perf_counter() - started, 2),
               "peak_rss_mib": round(peak_rss_mib())}
    else:
        raise SystemExit(f"unknown child run {argv[0]!r}")
    print(json.dumps(out), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        child(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reduce_1gpx",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=31623, help="image side (px)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".pelletseg" / "bench")
    parser.add_argument("--noise-per-mpx", type=float, default=100.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--worker", action="store_true",
                        help="measure segment_row (bundled model) with and without the partial")
    args = parser.parse_args(argv)
    if args.worker:
        figures = {"worker": run_worker(args.side, args.work), "load_average": os.getloadavg(),
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    else:
        figures = run(args.side, args.work, args.noise_per_mpx)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
