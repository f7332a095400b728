"""``pelletseg run``: submit one image through the real queue path and follow it to the end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from core.settings import Settings
from core.states import JOB_TERMINAL, JobStatus
from queues.app import make_celery, send
from storage.blobs.layout import (
    CONFIDENCE_JSON,
    FRACTIONS_JSON,
    OPTIONAL_OUTPUTS,
    OUTPUT_FILES,
    output_key,
)
from storage.blobs.store import BlobStore
from storage.jobtable.table import JobTable, job_table
from storage.jobtable.tables import Job
from submission import SubmissionService
from submission.stack import prepare
from worker.context import WorkerContext
from worker.local import LocalWorkers, log_tail
from worker.stages.reconciling import reconcile

console = Console()


def follow(
    table: JobTable,
    job_id: str,
    workers: LocalWorkers | None,
    poll: float = 0.5,
    tick: Callable[[], object] | None = None,
    tick_every: float = 10.0,
) -> Job:
    """Show a progress bar (rows done / total, Mpx/s, ETA) until the job ends; call ``tick``
    (the reconciler) every ``tick_every`` seconds.

    Returns:
        The job in its terminal status.

    Raises:
        RuntimeError: every local worker process died before the job ended.
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows  {task.fields[mpxs]:.2f} Mpx/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    started = last_tick = time.monotonic()
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=None, mpxs=0.0)
        while True:
            job = table.jobs.get(job_id)
            if job.rows_total:
                prog = table.rows.progress(job_id)
                elapsed = max(1e-6, time.monotonic() - started)
                bar.update(task, total=job.rows_total, completed=prog.done,
                           mpxs=prog.pixels_done / elapsed / 1e6, description=job.status)
            else:
                bar.update(task, description=job.status)
            if job.status in JOB_TERMINAL:
                return job
            if tick is not None and time.monotonic() - last_tick >= tick_every:
                tick()
                last_tick = time.monotonic()
            if workers is not None and workers.alive() == 0:
                raise RuntimeError("all local workers exited:\n" + log_tail(workers.settings))
            time.sleep(poll)


def fractions_table(doc: dict) -> Table:
    """A rich table of a fractions.json document."""
    table = Table(title=f"Phase fractions  ({doc['width']} x {doc['height']} px, model "
                        f"{doc['model']['name']} {doc['model']['version']})")
    table.add_column("class")
    table.add_column("pixels", justify="right")
    table.add_column("% of image", justify="right")
    table.add_column("% of pellet", justify="right")
    for c in doc["classes"]:
        pp = "-" if c["percent_of_pellet"] is None else f"{c['percent_of_pellet']:.2f}"
        table.add_row(c["name"], f"{c['pixels']:,}", f"{c['percent']:.2f}", pp)
    return table


def confidence_table(doc: dict) -> Table:
    """A rich table of a confidence.json document: per class, the share of pixels whose
    confidence (max softmax probability) is below ``low_below`` and the mean confidence."""
    table = Table(title=f"Low confidence (p < {doc['low_below']}): where to label next")
    table.add_column("class")
    table.add_column("pixels", justify="right")
    table.add_column("low-confidence %", justify="right")
    table.add_column("mean confidence", justify="right")

    def mean(v):
        return "-" if v is None else f"{v:.3f}"

    for c in doc["classes"]:
        table.add_row(c["name"], f"{c['pixels']:,}", f"{c['low_confidence_percent']:.2f}",
                      mean(c["mean_confidence"]))
    table.add_row("all", f"{doc['pixels_total']:,}", f"{doc['low_confidence_percent']:.2f}",
                  mean(doc["mean_confidence"]))
    return table


def drive(
    settings: Settings,
    start: Callable[[SubmissionService], Job],
    *,
    workers: int,
    out: Path | None,
) -> int:
    """Start N local workers on a prepared stack, call ``start(service)`` (submit or resume a
    job), follow the job to its end with the reconciler running, then print its fractions
    and output locations.

    Returns:
        Process exit code: 0 if the job succeeded, 1 otherwise.
    """
    table = job_table(settings)
    blobs = BlobStore(settings.resolved_storage_url)
    app = make_celery(settings)
    ctx = WorkerContext.from_settings(settings, lambda task, *args: send(app, task, *args))
    pool = LocalWorkers(settings, workers).start() if workers > 0 else None
    t0 = time.monotonic()
    try:
        job = start(SubmissionService(settings, table=table, app=app))
        console.print(f"job [bold]{job.id}[/] {job.status}: {job.source_url}")
        job = follow(table, job.id, pool, tick=lambda: reconcile(ctx),
                     tick_every=max(5.0, settings.lease_seconds / 4))
    finally:
        peaks = pool.peak_rss_mib() if pool is not None else []
        if pool is not None:
            pool.stop()
    wall = time.monotonic() - t0
    if job.status != JobStatus.SUCCEEDED:
        console.print(f"[red]job {job.id} {job.status}[/]: {job.error}")
        console.print(f"fix the cause, then: pelletseg resume {job.id}")
        return 1
    doc = json.loads(blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    console.print(fractions_table(doc))
    if blobs.exists(output_key(job.id, CONFIDENCE_JSON)):
        console.print(confidence_table(json.loads(
            blobs.get_bytes(output_key(job.id, CONFIDENCE_JSON)))))
    mpx = job.width * job.height / 1e6
    console.print(f"{mpx:.1f} Mpx in {wall:.1f} s = {mpx / wall:.2f} Mpx/s end to end")
    if peaks:
        console.print("worker peak RSS: " + ", ".join(f"{p:.0f} MiB" for p in peaks))
    console.print("outputs:")
    for name in (*OUTPUT_FILES, *OPTIONAL_OUTPUTS):
        key = output_key(job.id, name)
        if name in OPTIONAL_OUTPUTS and not blobs.exists(key):
            continue
        target = blobs.url(key)
        if out is not None:
            dest = Path(out) / name
            blobs.get_file(key, dest)
            target = str(dest)
        console.print(f"  {name:15s} {target}")
    return 0


def run(
    settings: Settings,
    source: str,
    *,
    model: str | None,
    workers: int,
    out: Path | None,
    labels: dict | None = None,
) -> int:
    """Submit ``source`` and follow it (see :func:`drive`)."""
    prepare(settings)
    spec = SubmissionService(settings).build_spec(source, model=model, labels=labels or {})
    return drive(settings, lambda service: service.submit(spec), workers=workers, out=out)


def resume(settings: Settings, job_id: str, *, workers: int, out: Path | None) -> int:
    """Resume a failed or cancelled job (only what is not done is redone) and follow it."""
    prepare(settings)
    return drive(settings, lambda service: service.resume(job_id), workers=workers, out=out)
