"""Our pipeline: a whole job through the real queue path, and the ``segment_row`` task alone.

Queue run: the local stack of ``pelletseg run`` (job table and broker on SQLite under the
work folder unless ``PELLETSEG_*`` variables name others, :class:`worker.local.LocalWorkers`
``celery worker`` processes). Workers are started and warmed up (each has run a row, so its
model is loaded) before the clock starts, as long-running production workers are; the time
is from submission to ``succeeded`` (plan, every row, the reducer's pyramid, overlay,
preview and fractions). Per-task overhead comes from the row records' timestamps. Queued
run (``--queued-jobs``): several such jobs submitted at once to the same warm workers, the
throughput of a stream of jobs (:func:`queued_run`).

Task alone: ``worker.stages.segmenting.segment_row`` called in this process on one interior row
(read + infer + checkpoint write + job-table updates), the job table and the blob store
wrapped in :class:`benchmarks.timing.TimedProxy` to split out their time.
"""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import structlog.testing

from benchmarks.config import BenchConfig
from benchmarks.inputs import crop_image
from benchmarks.timing import TimedProxy
from core.settings import Settings
from core.states import JOB_TERMINAL, JobStatus


class BenchError(RuntimeError):
    """A benchmark job did not succeed; the message holds the reason and the worker logs."""


def stack_settings(cfg: BenchConfig, home: Path, model: str, **extra) -> Settings:
    """Settings of a bench stack under ``home`` (explicit fields reach the workers)."""
    return Settings(
        home=home, tile_size=cfg.tile_size, halo=cfg.halo, rows_per_task=1,
        batch_size=cfg.batch_size, device=cfg.device, torch_threads=cfg.threads,
        rows_in_flight=cfg.rows_in_flight, precision=cfg.precision, default_model=model,
        lease_seconds=1800, stream_reduce=bool(cfg.stream_reduce), runtime=cfg.runtime,
        **extra,
    )


def _wait(table, job_id: str, timeout: float, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = table.jobs.get(job_id)
        if job.status in JOB_TERMINAL:
            return job
        time.sleep(poll)
    raise BenchError(f"job {job_id} still {job.status} after {timeout:.0f} s")


def _submit_and_wait(settings: Settings, app, table, source: Path, timeout: float, pool):
    from submission import SubmissionService
    from worker.local import log_tail

    started = time.perf_counter()
    service = SubmissionService(settings, table=table, app=app)
    job = service.submit(service.build_spec(str(source)))
    job = _wait(table, job.id, timeout)
    seconds = time.perf_counter() - started
    if job.status != JobStatus.SUCCEEDED:
        raise BenchError(f"bench job {job.id} {job.status}: {job.error}\n{log_tail(settings)}")
    return job, seconds


def row_timeline(rows) -> dict:
    """Task times and queue gaps from the row records of one job.

    A task's time is ``finished_at - started_at`` (claim to done); a gap is the time a worker
    spent between finishing one row and claiming its next one (broker delivery, Celery
    dispatch, reading the job): pure overhead.
    """
    by_worker = defaultdict(list)
    for r in rows:
        by_worker[r.worker].append(r)
    tasks, gaps = [], []
    for worker_rows in by_worker.values():
        worker_rows.sort(key=lambda r: r.started_at)
        tasks += [(r.finished_at - r.started_at).total_seconds() for r in worker_rows]
        gaps += [(b.started_at - a.finished_at).total_seconds()
                 for a, b in itertools.pairwise(worker_rows)]
    first = min(r.started_at for r in rows)
    last = max(r.finished_at for r in rows)
    return {
        "rows": len(rows), "workers_used": len(by_worker),
        "rows_phase_s": (last - first).total_seconds(),
        "task_s_mean": statistics.fmean(tasks),
        "queue_gap_s_mean": statistics.fmean(gaps) if gaps else 0.0,
        "queue_gap_s_max": max(gaps) if gaps else 0.0,
        "first_row_started": first, "last_row_finished": last,
    }


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FIELD = re.compile(r"(\w+)=(\S+)")
_EVENT = re.compile(r"\]\s+([\w.]+)")


def job_log_events(log_dir: Path, job_id: str) -> list[dict]:
    """The structlog lines of ``job_id`` in the local workers' logs (``worker-*.log``), each as
    ``{"event": name, key: value, ...}`` (values parsed as float where they are numbers).
    """
    events = []
    for path in sorted(log_dir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            line = _ANSI.sub("", line)
            fields = dict(_FIELD.findall(line))
            if fields.get("job_id") != job_id:
                continue
            name = _EVENT.search(line)
            event = {"event": name.group(1) if name else ""}
            for key, value in fields.items():
                try:
                    event[key] = float(value)
                except ValueError:
                    event[key] = value
            events.append(event)
    return events


def worker_time_budget(events: list[dict], workers: int, seconds: float,
                       submit_to_first_row_s: float, rows_phase_s: float) -> dict:
    """Where a job's worker time went: ``workers x seconds`` (s) split into stages, each with
    its seconds and its share (%) of that total, from the job's log events
    (:func:`job_log_events`) and its row timeline (:func:`row_timeline`).

    Stages: ``model`` (the forward passes, ``row.computed`` ``device_s``); ``tiles`` (the rest
    of the strip loop: tile copies, placing cores, waiting for the reader); ``checkpoints``
    (label and confidence strips and the count table, ``write_s``); ``partial`` (the
    microstructure partial, ``row.partial``); ``row_rest`` (claim, job table, class counts,
    checksum: ``row.done`` seconds less the above); ``between_rows`` (the rows phase not
    inside a row task: queue gaps, a worker without a row left while another finishes);
    ``before_rows`` (submission to the first claim); ``after_rows`` (the last row done to
    ``succeeded``, the reducer's time, on one worker while the others wait). The stages add
    up to the total; ``reducer`` details the reducer's own log (wall seconds of products that
    overlap in threads, so they do not add up). pipeline / limit is about the model's share
    times the model's speed in the pipeline relative to the limit's.
    """
    rows = {}
    for e in events:
        if e["event"] in ("row.computed", "row.partial", "row.done") and "row" in e:
            rows.setdefault(int(e["row"]), {})[e["event"]] = e
    total = workers * seconds
    stages = dict.fromkeys(("model", "tiles", "checkpoints", "partial", "row_rest"), 0.0)
    for r in rows.values():
        computed = r.get("row.computed", {})
        partial = r.get("row.partial", {}).get("seconds", 0.0)
        strip, write = computed.get("strip_s", 0.0), computed.get("write_s", 0.0)
        stages["model"] += computed.get("device_s", 0.0)
        stages["tiles"] += strip - computed.get("device_s", 0.0)
        stages["checkpoints"] += write
        stages["partial"] += partial
        stages["row_rest"] += r.get("row.done", {}).get("seconds", 0.0) - strip - write - partial
    in_rows = sum(stages.values())
    stages["between_rows"] = workers * rows_phase_s - in_rows
    stages["before_rows"] = workers * submit_to_first_row_s
    stages["after_rows"] = total - workers * (submit_to_first_row_s + rows_phase_s)
    reduce = next((e for e in events if e["event"] == "reduce.done"), {})
    reducer = {k: v for k, v in reduce.items() if k.endswith("_s") or k == "seconds"}
    return {
        "workers": workers, "total_s": total,
        "stages": {k: {"seconds": round(v, 3), "pct": round(100 * v / total, 1) if total else 0.0}
                   for k, v in stages.items()},
        "rows_logged": len(rows), "reducer": reducer,
    }


@dataclass
class WarmStack:
    """A local stack whose ``cfg.workers`` workers have each run a row (model loaded)."""

    settings: Settings
    app: Any
    table: Any
    pool: Any
    warm_workers: int


@contextmanager
def warm_workers(cfg: BenchConfig, package: Path, image: Path, work: Path):
    """A fresh local stack under ``work / "stack"`` with the package published and
    ``cfg.workers`` local workers, warmed up on a crop of ``image`` (2 rows per worker,
    repeated until every worker has run a row); yields a :class:`WarmStack`, stops the workers
    on exit.

    Raises:
        BenchError: a worker did not run a warm-up row (or died): the run would not measure
            the configuration asked for.
    """
    from models import read_package
    from queues import make_celery
    from storage.jobtable import job_table
    from submission import prepare
    from worker.local import LocalWorkers, log_tail

    pkg = read_package(package)
    settings = stack_settings(cfg, work / "stack", pkg.name)
    prepare(settings).publish(package)
    table, app = job_table(settings), make_celery(settings)
    warm = crop_image(image, cfg.work_dir / "images"
                      / f"warmup-{image.stem}-{cfg.workers}-{cfg.stride}.tif",
                      min(2 * cfg.stride, cfg.image_side), 2 * cfg.workers * cfg.stride)
    seen: set[str] = set()
    with LocalWorkers(settings, cfg.workers) as pool:
        for _attempt in range(4):
            job, _ = _submit_and_wait(settings, app, table, warm, cfg.timeout_s, pool)
            seen |= {r.worker for r in table.rows.list(job.id)}
            if len(seen) >= cfg.workers:
                break
        if len(seen) < cfg.workers or pool.alive() < len(pool.procs):
            raise BenchError(f"only {len(seen)} of {cfg.workers} workers ran a warm-up row "
                             f"({pool.alive()} of {len(pool.procs)} processes alive): the run "
                             f"would not measure the configuration asked for\n"
                             f"{log_tail(settings)}")
        yield WarmStack(settings, app, table, pool, len(seen))


def queued_run(cfg: BenchConfig, package: Path, image: Path, work: Path, jobs: int) -> dict:
    """``jobs`` jobs of ``image`` submitted at once to ``cfg.workers`` warm local workers, as a
    laboratory submits a batch of pellets: each job's reducer then runs beside the next jobs'
    rows instead of beside idle workers, so this is the throughput of a stream of jobs where
    :func:`queue_run` gives one job's end to end.

    Returns:
        ``jobs``, ``mpx`` (all jobs), ``seconds`` (first submission -> last ``succeeded``),
        ``mpx_s``, ``job_seconds`` (when each job reached ``succeeded``, s after the first
        submission, in submission order), ``device_s`` (forward passes of all rows, from the
        workers' logs) and ``model_busy_pct`` (``device_s`` / (workers x ``seconds``)).

    Raises:
        ValueError: ``jobs`` < 1.
        BenchError: a job failed or timed out, or a worker did not warm up.
    """
    from submission import SubmissionService
    from worker.local import log_tail

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    with warm_workers(cfg, package, image, work) as stack:
        service = SubmissionService(stack.settings, table=stack.table, app=stack.app)
        started = time.perf_counter()
        spec = service.build_spec(str(image))
        ids = [service.submit(spec).id for _ in range(jobs)]
        done = [_wait(stack.table, job_id, cfg.timeout_s) for job_id in ids]
        seconds = time.perf_counter() - started
        failed = [j for j in done if j.status != JobStatus.SUCCEEDED]
        if failed:
            raise BenchError(f"queued bench job {failed[0].id} {failed[0].status}: "
                             f"{failed[0].error}\n{log_tail(stack.settings)}")
    first = min(j.created_at for j in done)
    mpx = sum(j.width * j.height for j in done) / 1e6
    device_s = sum(e.get("device_s", 0.0) for j in done
                   for e in job_log_events(stack.settings.home / "logs", j.id)
                   if e["event"] == "row.computed")
    return {"jobs": jobs, "mpx": mpx, "seconds": seconds, "mpx_s": mpx / seconds,
            "job_seconds": [round((j.finished_at - first).total_seconds(), 3) for j in done],
            "device_s": device_s,
            "model_busy_pct": 100 * device_s / (cfg.workers * seconds)}


def queue_run(cfg: BenchConfig, package: Path, image: Path, work: Path) -> dict:
    """One job through the queue with ``cfg.workers`` warm local workers.

    Returns:
        Wall time and Mpx/s end to end, the rows phase, plan and reduce times, the time from
        the last row done to ``succeeded`` (what the reducer adds after the rows; a streaming
        stitcher shortens it), task times and queue gaps, the workers' peak RSS.

    Raises:
        BenchError: a job failed or timed out (with the workers' log tails).
    """
    from storage.blobs import LABELS, BlobStore, output_key

    with warm_workers(cfg, package, image, work) as stack:
        settings, table, pool = stack.settings, stack.table, stack.pool
        job, seconds = _submit_and_wait(settings, stack.app, table, image, cfg.timeout_s, pool)
        peaks = pool.peak_rss_mib()
    rows = table.rows.list(job.id)
    timeline = row_timeline(rows)
    events = job_log_events(settings.home / "logs", job.id)
    device_s = sum(e.get("device_s", 0.0) for e in events if e["event"] == "row.computed")
    logged = sum(e["event"] == "row.computed" for e in events)
    created = job.created_at
    mpx = job.width * job.height / 1e6
    labels = BlobStore(settings.resolved_storage_url).local_file(
        output_key(job.id, LABELS), settings.resolved_cache_dir)
    return {
        "job_id": job.id, "width": job.width, "height": job.height, "mpx": mpx,
        "seconds": seconds, "mpx_s": mpx / seconds,
        "rows_mpx_s": mpx / timeline["rows_phase_s"],
        "submit_to_first_row_s": (timeline["first_row_started"] - created).total_seconds(),
        "reduce_s": (job.outputs or {}).get("reduce_seconds"),
        "streamed": bool((job.outputs or {}).get("streamed")),
        "after_last_row_s": (job.finished_at - timeline["last_row_finished"]).total_seconds(),
        "labels_path": str(labels),
        "warm_workers": stack.warm_workers,
        "device_s": device_s, "device_s_rows_logged": logged,
        "model_busy_pct": 100 * device_s / (cfg.workers * seconds),
        "model_busy_rows_phase_pct": 100 * device_s / (cfg.workers * timeline["rows_phase_s"]),
        "worker_peak_rss_mib": [round(p) for p in peaks],
        "budget": worker_time_budget(
            events, cfg.workers, seconds,
            (timeline["first_row_started"] - created).total_seconds(), timeline["rows_phase_s"]),
        **{k: v for k, v in timeline.items() if not k.endswith(("started", "finished"))},
    }


def task_alone(cfg: BenchConfig, package: Path, image: Path, work: Path, threads: int) -> dict:
    """``segment_row`` in this process (``threads`` torch threads) on an interior row of
    ``image``, after one warm-up row, with job-table and storage time split out.

    Returns:
        Row size, wall time, Mpx/s, and seconds in the strip pipeline (read, read not
        overlapped), checkpoint write, job table and blob store.
    """
    from models import read_package
    from submission import SubmissionService, prepare
    from worker.context import WorkerContext
    from worker.stages.planning import plan_job
    from worker.stages.segmenting import segment_row

    pkg = read_package(package)
    settings = stack_settings(cfg, work / "task-alone", pkg.name).model_copy(
        update={"torch_threads": threads, "rows_in_flight": 1})
    prepare(settings).publish(package)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)  # stages run here
    job = ctx.table.jobs.create(SubmissionService(settings, table=ctx.table).build_spec(str(image)))
    plan_job(ctx, job.id)
    n_rows = ctx.table.jobs.get(job.id).rows_total
    segment_row(ctx, job.id, 0)  # loads the model
    if n_rows < 2:
        raise BenchError("the bench image needs at least two tile rows for segment_row alone")
    index = n_rows // 2
    jobs, blobs = TimedProxy(ctx.table), TimedProxy(ctx.blobs)
    ctx.table, ctx.blobs = jobs, blobs
    with structlog.testing.capture_logs() as logs:
        started = time.perf_counter()
        outcome = segment_row(ctx, job.id, index)
        seconds = time.perf_counter() - started
    if outcome != "done":
        raise BenchError(f"segment_row on row {index} returned {outcome!r}")
    computed = next((e for e in logs if e.get("event") == "row.computed"), {})
    row = ctx.table.rows.get(job.id, index)
    mpx = (row.y1 - row.y0) * ctx.table.jobs.get(job.id).width / 1e6
    return {
        "row": index, "row_mpx": mpx, "tiles": computed.get("tiles"), "threads": threads,
        "seconds": seconds, "mpx_s": mpx / seconds,
        "strip_s": computed.get("strip_s"), "read_s": computed.get("read_s"),
        "read_wait_s": computed.get("read_wait_s"), "write_s": computed.get("write_s"),
        "device_s": computed.get("device_s"),
        "model_share_pct": 100 * computed.get("device_s", 0.0) / seconds,
        "job_table_s": jobs.seconds, "job_table_calls": jobs.calls,
        "storage_s": blobs.seconds, "storage_calls": blobs.calls,
    }
