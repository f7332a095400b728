"""``pelletseg run``: submit images through the real queue path and follow them to the end."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
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

from cli.console import make_console
from cli.interrupts import (
    EXIT_INTERRUPTED,
    GRACE_SECONDS,
    batch_resume_hint,
    interrupt_job,
    resume_hint,
    second_interrupt_exits,
)
from cli.modelinfo import describe, with_bundled_domain
from cli.options import split_model
from cli.scenes import scenes_of
from core.inference import inference_lines
from core.job_warnings import WarningCode, warning_lines
from core.settings import Settings
from core.sources import source_name
from core.states import JOB_TERMINAL, JobStatus
from imaging.formats import SCENE_OPTION, SIGNIFICANT_BITS_OPTION
from imaging.mosaic import demo_folders
from models import ModelPackage
from models.suitability import demo_model_warning
from queues.app import make_celery
from storage.blobs.layout import (
    CONFIDENCE_JSON,
    FRACTIONS_JSON,
    MICROSTRUCTURE_JSON,
    OPTIONAL_OUTPUTS,
    OUTPUT_FILES,
    job_prefix,
    output_key,
)
from storage.blobs.store import BlobStore
from storage.jobtable.table import JobTable, job_table
from storage.jobtable.tables import Job
from submission import SubmissionError, SubmissionService
from submission.reports import MAX_BATCH, batch_jobs, batch_table
from submission.stack import prepare
from worker.context import WorkerContext
from worker.local import ForeignCheckout, LocalWorkers, check_working_directory, log_tail
from worker.stages.reconciling import reconcile

console = make_console()
err_console = make_console(stderr=True)


#: Seconds ``pelletseg run --workers 0`` waits before it says that no worker is running (one
#: that starts registers within a second or two; a heartbeat is due every few seconds).
NO_WORKER_GRACE = 15.0


class WorkersExited(RuntimeError):
    """Every local worker process exited before the jobs ended (its message: the end of each
    worker's log, which says why: an install without torch, a database it cannot open, ...)."""


def follow(
    table: JobTable,
    job_ids: Sequence[str],
    workers: LocalWorkers | None,
    poll: float = 0.5,
    tick: Callable[[], object] | None = None,
    tick_every: float = 10.0,
    quiet: Sequence[str] = (),
    no_worker_hint: str | None = None,
) -> list[Job]:
    """Show a progress bar per job (rows done / total, Mpx/s, ETA, its status; with several
    jobs each labelled with its id's first 8 characters), all at once, until every job
    ended; call ``tick`` (the reconciler) every ``tick_every`` seconds. A job's warnings
    (:mod:`core.job_warnings`) are printed as soon as its planner stored them, so a pixel
    size unlike the model's is known before the rows are done: each message once, whichever
    job it is of, and none of the codes in ``quiet`` (said before submitting). Without local
    workers (``workers`` None), ``no_worker_hint`` is printed once, in yellow, when no worker
    process has a live heartbeat in the job table :data:`NO_WORKER_GRACE` s after the start
    (the jobs would wait queued with nothing to say why).

    Returns:
        The jobs in their terminal status, in the order of ``job_ids``.

    Raises:
        WorkersExited: every local worker process died before the jobs ended.
    """
    columns = (
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows  {task.fields[mpxs]:.2f} Mpx/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    labels = {job_id: f"{job_id[:8]} " if len(job_ids) > 1 else "" for job_id in job_ids}
    ended: dict[str, Job] = {}
    warned: set[str] = set()
    said = set(quiet)  # each warning message once, whichever job it is of
    looked_for_workers = False  # without local workers: whether any runs, asked once
    started = last_tick = time.monotonic()
    with Progress(*columns, console=console, transient=False) as bar:
        tasks = {job_id: bar.add_task(f"{labels[job_id]}queued", total=None, mpxs=0.0)
                 for job_id in job_ids}
        while True:
            for job_id, task in tasks.items():
                if job_id in ended:
                    continue
                job = table.jobs.get(job_id)
                warnings = (getattr(job, "outputs", None) or {}).get("warnings")
                if warnings and job_id not in warned:
                    warned.add(job_id)
                    print_new_warnings(bar.console, labels[job_id], warnings, said)
                description = f"{labels[job_id]}{job.status}"
                if job.rows_total:
                    prog = table.rows.progress(job_id)
                    elapsed = max(1e-6, time.monotonic() - started)
                    bar.update(task, total=job.rows_total, completed=prog.done,
                               mpxs=prog.pixels_done / elapsed / 1e6, description=description)
                else:
                    bar.update(task, description=description)
                if job.status in JOB_TERMINAL or job.status == JobStatus.INTERRUPTED:
                    ended[job_id] = job
            if len(ended) == len(job_ids):
                return [ended[job_id] for job_id in job_ids]
            if tick is not None and time.monotonic() - last_tick >= tick_every:
                tick()
                last_tick = time.monotonic()
            if workers is None and no_worker_hint and not looked_for_workers \
                    and time.monotonic() - started >= NO_WORKER_GRACE:
                looked_for_workers = True
                if not table.heartbeats.live():
                    bar.console.print(no_worker_hint, style="yellow", markup=False,
                                      highlight=False)
            if workers is not None and workers.alive() == 0:
                raise WorkersExited("the local workers exited before the jobs ended; the end of "
                                    "their logs says why:\n" + log_tail(workers.settings, 6))
            time.sleep(poll)


def fractions_table(doc: dict) -> Table:
    """A rich table of a fractions.json document; at least as wide as its title, so the title
    is never wrapped."""
    title = (f"Phase fractions  ({doc['width']} x {doc['height']} px, model "
             f"{doc['model']['name']} {doc['model']['version']})")
    table = Table(title=title, min_width=len(title))
    table.add_column("class")
    table.add_column("pixels", justify="right")
    table.add_column("% of image", justify="right")
    table.add_column("% of pellet", justify="right")
    for c in doc["classes"]:
        pp = "-" if c["percent_of_pellet"] is None else f"{c['percent_of_pellet']:.2f}"
        table.add_row(c["name"], f"{c['pixels']:,}", f"{c['percent']:.2f}", pp)
    caption = [f"% of pellet: {doc['pellet_note']}"] if doc.get("pellet_note") else []
    caption += inference_lines(doc.get("inference"))
    if doc.get("nodata_pixels"):
        mount = next((c["name"] for c in doc["classes"] if c["percent_of_pellet"] is None), None)
        caption.append(f"{doc['nodata_pixels']:,} px no image covers "
                       f"({100 * doc['nodata_pixels'] / max(1, doc['pixels_total']):.2f} %): "
                       + (f"labelled {mount}" if doc.get("mount_class_declared") and mount
                          else "the model has no mount class to label them"))
    if doc.get("significant_bits") is not None:
        caption.append(f"16-bit source read as {doc['significant_bits']} significant bits "
                       "(--significant-bits)")
    if caption:
        table.caption = "\n".join(caption)
    return table


def print_fractions(doc: dict) -> None:
    """Print :func:`fractions_table` of a fractions.json document, then its warnings
    (:mod:`core.job_warnings`) in yellow."""
    console.print(fractions_table(doc))
    for line in warning_lines(doc.get("warnings")):
        console.print(line, style="yellow", markup=False, highlight=False)


def print_new_warnings(out: Console, prefix: str, warnings: Sequence[Mapping[str, Any]],
                       said: set[str]) -> None:
    """Print ``warnings`` (:mod:`core.job_warnings`) as ``prefix`` + ``warning: ...`` lines in
    yellow on ``out``, leaving out those whose code or message is in ``said``, and add the
    printed messages to ``said``: while jobs are followed, each warning is said once."""
    fresh = [w for w in warnings if w["code"] not in said and w["message"] not in said]
    said.update(w["message"] for w in fresh)
    for line in warning_lines(fresh):
        out.print(f"{prefix}{line}", style="yellow", markup=False, highlight=False)


def report_heading(source_url: str, scene: int | None, job_id: str) -> str:
    """``"== P-2.png scene 1 (job 5b0f7a0e) =="``: which image a report of several is of."""
    name = source_name(source_url)
    return f"== {name}{'' if scene is None else f' scene {scene}'} (job {job_id[:8]}) =="


#: The longest file name (bytes) ext4, XFS and most file systems take.
NAME_MAX = 255


def output_folder_name(job_id: str, source_url: str, scene: int | None) -> str:
    """The folder of one image's outputs in a batch's ``--out``: ``{job id[:8]}-{file stem}``
    (``-scene{N}`` for a scene), the stem cut (at a character) to keep the name within
    :data:`NAME_MAX` bytes: a file named near that limit crashed the copy of every output of
    its batch with "File name too long". The job id keeps the names apart."""
    prefix, suffix = f"{job_id[:8]}-", "" if scene is None else f"-scene{scene}"
    room = NAME_MAX - len(prefix.encode()) - len(suffix.encode())
    stem = Path(source_name(source_url)).stem.encode()[:room].decode(errors="ignore")
    return f"{prefix}{stem}{suffix}"


def print_microstructure(report: dict | None) -> None:
    """Print :func:`microstructure.summary_lines` of a microstructure.json document (a note
    when the job has none)."""
    from microstructure import summary_lines

    if report is None:
        console.print("microstructure: none (the job was reduced before pelletseg computed it)")
        return
    for line in summary_lines(report):
        console.print(line, markup=False, highlight=False)
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
    start: Callable[[SubmissionService], Job | list[Job]],
    *,
    workers: int,
    out: Path | None,
    quiet: Sequence[str] = (),
) -> int:
    """Start N local workers on a prepared stack, call ``start(service)`` (submit or resume a
    job, or submit or resume jobs of a batch: a list), follow the jobs to their end with the
    reconciler running (their warnings as soon as planned, but for the codes in ``quiet``:
    :func:`follow`), then print each one's fractions and output locations (a list of jobs:
    each one's outputs in ``out/<job id prefix>-<image name>/`` and the batch's table of
    sections).

    Ctrl-C marks the jobs that have not ended ``interrupted`` and stops the workers
    (``cli/interrupts.py``).

    Returns:
        Process exit code: 0 if every job succeeded, 130 after Ctrl-C, 1 otherwise (also
        when every local worker exited before the jobs ended: the reason from their logs is
        printed, and the jobs are left ``interrupted`` to resume).

    Raises:
        click.ClickException: ``workers > 0`` in a directory whose pelletseg checkout is not
            this one (:func:`worker.local.check_working_directory`); checked before the job
            is submitted.
    """
    if workers > 0:
        try:
            check_working_directory()
        except ForeignCheckout as e:
            raise click.ClickException(str(e)) from e
    table = job_table(settings)
    blobs = BlobStore(settings.resolved_storage_url)
    app = make_celery(settings)
    ctx = WorkerContext.on_broker(settings, app)
    t0 = time.monotonic()
    job_ids: list[str] = []
    peaks: list[float] = []
    pool = None
    several = False  # jobs of a batch: a folder of outputs each, and the batch's table
    try:
        # the jobs first: resume judges a stack with no live worker before ours start
        started = start(SubmissionService(settings, table=table, app=app))
        several = isinstance(started, list)
        jobs = started if several else [started]
        job_ids = [j.id for j in jobs]
        pool = LocalWorkers(settings, workers).start() if workers > 0 else None
        for job in jobs:
            console.print(f"job {job.id} {job.status}: {job.source_url}{_scene_of(job)}")
        ended = follow(table, job_ids, pool, tick=lambda: reconcile(ctx),
                       tick_every=max(2.0, settings.reconcile_seconds or 10.0), quiet=quiet,
                       no_worker_hint=(
                           f"no worker is running for {settings.home} (none has a live "
                           "heartbeat in its job table), so the jobs wait queued: start one "
                           f"with `pelletseg worker --home {settings.home}` in another "
                           "terminal, or run without --workers 0"))
    except (KeyboardInterrupt, WorkersExited) as e:
        # Ctrl-C, or no worker left: the jobs say what happened (interrupted, resumable), the
        # workers stop without taking new rows
        with second_interrupt_exits():
            statuses = {job_id: interrupt_job(table, job_id) for job_id in job_ids}
            if pool is not None:
                pool.stop(timeout=GRACE_SECONDS)
                pool = None
            if isinstance(e, WorkersExited):
                console.print(f"error: {e}", style="red", markup=False, highlight=False)
            else:
                console.print("interrupted", style="yellow")
            if several:  # one command for the batch, not three lines per image
                hints = [batch_resume_hint(jobs[0].batch_id, settings.home, statuses)]
            else:
                hints = [resume_hint(job_id, settings.home, status)
                         for job_id, status in statuses.items()]
            for hint in hints:
                console.print(hint, soft_wrap=True, highlight=False)
        return EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else 1
    finally:
        if pool is not None:
            peaks = pool.peak_rss_mib()
            pool.stop()
    wall = time.monotonic() - t0
    done = [j for j in ended if j.status == JobStatus.SUCCEEDED]
    mpx = sum(j.width * j.height for j in done) / 1e6
    totals = [f"{mpx:.1f} Mpx in {wall:.1f} s = {mpx / wall:.2f} Mpx/s end to end"
              + (f" ({len(done)} of {len(ended)} images)" if several else "")] if done else []
    if peaks:
        totals.append("worker peak RSS: " + ", ".join(f"{p:.0f} MiB" for p in peaks))
    for job in ended:
        folder = out
        if several:  # which image each report is of
            scene = (job.spec or {}).get("scene")
            console.print("\n" + report_heading(job.source_url, scene, job.id), style="bold",
                          markup=False, highlight=False)
            if out is not None:
                folder = Path(out) / output_folder_name(job.id, job.source_url, scene)
        _report(settings, blobs, job, folder, before_outputs=[] if several else totals)
    if several:  # one batch (run, resume --batch): its totals and its table of the images
        for line in totals:
            console.print(line)
        text = batch_table(table, blobs, ended[0].batch_id)
        name = f"batch-{ended[0].batch_id}-results.csv"
        dest = Path(out) / name if out is not None else settings.home / "batches" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        console.print(f"the images side by side: {dest}", soft_wrap=True, highlight=False)
        if len(done) < len(ended):
            console.print(f"once fixed, all of them at once: pelletseg resume --batch "
                          f"{ended[0].batch_id} --home {settings.home}", soft_wrap=True,
                          highlight=False)
    if out is not None and done and len(done) == len(ended):
        # every output was copied out: say what the store keeps (never with a job to resume,
        # whose done rows a delete --batch would take)
        whole = several and len(batch_jobs(table, ended[0].batch_id)) == len(ended)
        commands = ([f"pelletseg delete --batch {ended[0].batch_id}"] if whole
                    else [f"pelletseg delete {job.id}" for job in done])  # not the others'
        console.print(store_hint(blobs, done, "; ".join(
            f"{command} --home {settings.home}" for command in commands)),
            soft_wrap=True, highlight=False)
    return 0 if len(done) == len(ended) else 1


def _report(settings: Settings, blobs: BlobStore, job: Job, out: Path | None,
            before_outputs: Sequence[str] = ()) -> None:
    """Print a job's fractions, microstructure summary, confidence, the ``before_outputs``
    lines and its outputs (copied into ``out`` when given); for a job that did not succeed,
    its error and how to resume it."""
    if job.status != JobStatus.SUCCEEDED:
        reason = f": {job.error}" if job.error else ""  # a cancelled job has none
        console.print(f"job {job.id} {job.status}{reason}", style="red")
        rerun = rerun_options(job)
        if rerun:  # its spec must change: a new job
            console.print(f"then: pelletseg rerun {job.id} {rerun} --home {settings.home}",
                          soft_wrap=True, highlight=False)
            return
        first = "fix the cause, then" if job.status == JobStatus.FAILED else "to continue it"
        console.print(f"{first}: pelletseg resume {job.id} --home {settings.home}",
                      soft_wrap=True, highlight=False)
        return
    print_fractions(json.loads(blobs.get_bytes(output_key(job.id, FRACTIONS_JSON))))
    micro = output_key(job.id, MICROSTRUCTURE_JSON)
    print_microstructure(json.loads(blobs.get_bytes(micro)) if blobs.exists(micro) else None)
    if blobs.exists(output_key(job.id, CONFIDENCE_JSON)):
        console.print(confidence_table(json.loads(
            blobs.get_bytes(output_key(job.id, CONFIDENCE_JSON)))))
    for line in before_outputs:
        console.print(line)
    console.print("outputs:")
    for name in (*OUTPUT_FILES, *OPTIONAL_OUTPUTS):
        key = output_key(job.id, name)
        if not blobs.exists(key):
            continue  # optional outputs; radial_profiles.png when there is no profile
        target = blobs.url(key)
        if out is not None:
            dest = Path(out) / name
            blobs.get_file(key, dest)
            target = str(dest)
        console.print(f"  {name:22s} {target}")


def rerun_options(job: Job) -> str | None:
    """The options of ``pelletseg rerun`` a job refused at planning needs, from what the
    planner stored (``worker.stages.planning._rerun_with``): ``--scene N`` (N: one of its
    scenes) or ``--significant-bits 12`` (the camera depth that holds its samples); None for
    any other job."""
    outputs = job.outputs or {}
    if outputs.get("scenes"):
        return f"{SCENE_OPTION} N (N: one of {', '.join(map(str, outputs['scenes']))})"
    if outputs.get("significant_bits_suggested"):
        return f"{SIGNIFICANT_BITS_OPTION} {outputs['significant_bits_suggested']}"
    return None


def _scene_of(job: Job) -> str:
    """`` scene N`` for a job given a scene, else ``""``."""
    scene = (job.spec or {}).get("scene")
    return "" if scene is None else f" scene {scene}"


def store_hint(blobs: BlobStore, jobs: Sequence[Job], command: str) -> str:
    """``the store keeps its own copy (N MB, row checkpoints included); COMMAND frees it``
    (N: what ``jobs`` hold under ``jobs/{id}/``, MB = 10^6 bytes): said once their outputs
    were copied out, so that a laptop's store does not fill unnoticed."""
    size = sum(blobs.usage(job_prefix(job.id))[1] for job in jobs)
    return (f"the store keeps its own copy ({size / 1e6:.1f} MB, row checkpoints included); "
            f"{command} frees it")


def run(
    settings: Settings,
    sources: str | list[str],
    *,
    model: str | None,
    workers: int,
    out: Path | None,
    labels: dict | None = None,
    pixel_size_um: float | None = None,
    precision: str | None = None,
    significant_bits: int | None = None,
    scene: int | str | None = None,
) -> int:
    """Say which model runs and what it was trained on (warning when the demo model gets an
    image that is not a demo image), submit ``sources`` (several: one batch, every source
    checked before any job is created) and follow them (see :func:`drive`);
    ``model``: ``NAME`` (newest version) or ``NAME:VERSION``, None: the default model;
    ``pixel_size_um`` (µm/px) None: read from the source's metadata; ``precision`` None: the
    workers' ``PELLETSEG_PRECISION`` (:attr:`core.spec.JobSpec.precision`);
    ``significant_bits`` (8-16) None: what each 16-bit file records, else all its bits
    (:attr:`core.spec.JobSpec.significant_bits`); ``scene`` a number, ``all`` or None: one
    job per scene of a local OME-TIFF of several (:func:`cli.scenes.scenes_of`), said once
    per such file.

    Raises:
        SubmissionError: a source or an option is refused, or more than
            :data:`submission.reports.MAX_BATCH` sources (nothing is submitted).
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    jobs = []  # (source, scene): one job each
    for source in sources:
        scenes = scenes_of(source, scene)
        if len(scenes) > 1:
            console.print(f"{source}: {len(scenes)} scenes ({', '.join(map(str, scenes))}), one "
                          "job each (--scene N reads one)", soft_wrap=True, highlight=False)
        jobs += [(source, s) for s in scenes]
    if len(jobs) > MAX_BATCH:
        raise SubmissionError(f"{len(jobs)} images given; one run takes at most {MAX_BATCH} "
                              "(one batch, one table): run them in parts")
    registry = prepare(settings)
    name, version = split_model(model)
    service = SubmissionService(settings)
    specs = [service.build_spec(source, model=name, model_version=version,
                                labels=labels or {}, pixel_size_um=pixel_size_um,
                                precision=precision, significant_bits=significant_bits,
                                scene=s)
             for source, s in jobs]
    # one model for all the images (one --model): said once, its demo warning too
    announce_model(settings, registry.meta(specs[0].model, specs[0].model_version),
                   [s.source_url for s in specs], labels)
    quiet = [WarningCode.DEMO_MODEL]
    if len(specs) == 1:
        return drive(settings, lambda service: service.submit(specs[0]), workers=workers,
                     out=out, quiet=quiet)
    batch_id = str(uuid.uuid4())
    return drive(settings, lambda service: [service.submit(s, batch_id=batch_id) for s in specs],
                 workers=workers, out=out, quiet=quiet)


def announce_model(settings: Settings, pkg: ModelPackage, source_urls: str | Sequence[str],
                   labels: dict | None) -> None:
    """Print which model runs and what it was trained on; warn (on stderr, once) when the
    bundled demo model is given an image that is not a demo image."""
    pkg = with_bundled_domain(pkg)
    for line in describe(pkg):
        console.print(line)
    urls = [source_urls] if isinstance(source_urls, str) else source_urls
    warning = next((w for url in urls if (w := demo_model_warning(
        pkg, url, demo_folders(settings.home), labels))), None)
    if warning:  # said here once; each job carries it too (core.job_warnings)
        err_console.print(f"warning: {warning}", style="yellow")


def rerun(settings: Settings, job_id: str | None, *, model: str | None, workers: int,
          out: Path | None, batch_id: str | None = None, pixel_size_um: float | None = None,
          significant_bits: int | None = None, scene: int | None = None) -> int:
    """Segment an earlier job's source again as a new job, or with ``batch_id`` every job of
    a batch as a new batch (:meth:`SubmissionService.rerun`, ``rerun_batch``), with ``model``
    (``NAME`` or ``NAME:VERSION``; None: each earlier job's model at its newest version) and
    ``pixel_size_um`` / ``significant_bits`` replacing the earlier jobs' where given (and
    ``scene``, for one job), and follow them (:func:`drive`)."""
    prepare(settings)
    name, version = split_model(model)
    options = dict(model=name, model_version=version, pixel_size_um=pixel_size_um,
                   significant_bits=significant_bits)
    if batch_id is not None:
        return drive(settings, lambda service: service.rerun_batch(batch_id, **options),
                     workers=workers, out=out)
    return drive(settings, lambda service: service.rerun(job_id, scene=scene, **options),
                 workers=workers, out=out)


def resume(settings: Settings, job_id: str | None, *, workers: int, out: Path | None,
           batch_id: str | None = None) -> int:
    """Resume a failed, cancelled or interrupted job, or one a local stack left running when it
    died (no live worker, no live lease); with ``batch_id`` instead every failed, interrupted
    or so abandoned job of the batch (:meth:`SubmissionService.resume_batch`). Only what is not
    done is redone. Follow them (:func:`drive`)."""
    prepare(settings)
    if batch_id is not None:
        return drive(settings, lambda service: service.resume_batch(batch_id, abandoned_ok=True),
                     workers=workers, out=out)
    return drive(settings, lambda service: service.resume(job_id, abandoned_ok=True),
                 workers=workers, out=out)
