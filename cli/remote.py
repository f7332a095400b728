"""Commands that talk to a pelletseg API: ``submit``, ``jobs``, ``status``, ``watch``,
``cancel``, ``delete``, ``results`` (and ``resume --api``, registered in :mod:`cli.main`).

Each takes ``--api URL`` / ``PELLETSEG_API_URL`` and ``--api-key KEY`` / ``PELLETSEG_API_KEY``
(:func:`cli.options.api_options`).
Errors print one line (the API's ``detail``) and exit 2; ``submit --wait`` and ``watch`` exit
0 when every job succeeded, else 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cli.client import ApiClient, ClientError
from cli.console import make_console
from cli.options import (
    api_options,
    home_option,
    images_argument,
    job_or_batch,
    job_precision_option,
    significant_bits_option,
    split_model,
    writable_folder,
)
from cli.scenes import scene_option, scenes_of
from cli.sniff import NotAnImageError, sniff
from cli.uploading import default_ledger, upload_file
from core.job_warnings import warning_lines
from core.settings import get_settings
from core.sources import source_name
from core.states import JOB_TERMINAL

console = make_console()
TERMINAL = {s.value for s in JOB_TERMINAL}


def run_client(fn) -> None:
    """Run ``fn()`` (returns an exit code); :class:`ClientError` prints one line, exit 2."""
    try:
        code = fn()
    except ClientError as e:
        click.echo(f"error: {e}", err=True)
        code = 2
    sys.exit(code or 0)


def run_local(fn, *args) -> None:
    """Print ``fn(*args)``, a command on the local stack (``--home``); a
    :class:`~storage.errors.StorageError` or :class:`~submission.SubmissionError` prints one
    line and exits 2."""
    from storage.errors import StorageError
    from submission.service import SubmissionError

    try:
        click.echo(fn(*args))
    except (StorageError, SubmissionError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


def _labels(pairs: tuple[str, ...]) -> dict:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} must look like KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def _byte_progress(bar: Progress, name: str):
    def start(total: int, done: int):
        task = bar.add_task(name, total=total, completed=done)
        return lambda n: bar.advance(task, n)
    return start


def check_local_images(paths) -> None:
    """Refuse, before any upload, a local path that is not an image pelletseg reads (or an
    MRXS slide, whose data folder an upload cannot carry).

    Raises:
        ClientError: the first such path, with what is wrong and what to do.
    """
    for source in paths:
        path = Path(source)
        if "://" in source and not path.exists():
            continue
        try:
            kind = sniff(path)
        except NotAnImageError as e:
            raise ClientError(f"{e}; nothing was uploaded") from e
        if kind == "MRXS":
            raise ClientError(f"{path}: an MRXS slide is a file plus its data folder, which an "
                              "upload cannot carry; copy both to storage the workers read and "
                              "submit the .mrxs URL, or run it locally with `pelletseg run`")


@click.command("submit")
@images_argument("paths")
@click.option("--model", default=None, help="Model package name (default: the server's).")
@click.option("--model-version", default=None, help="Model version (default: newest).")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE metadata; repeatable.")
@click.option("--webhook", default=None, help="http(s) URL notified when each job ends.")
@click.option("--tile-size", type=int, default=None, help="Tile edge T (px).")
@click.option("--halo", type=int, default=None, help="Halo cropped per tile side (px).")
@click.option("--pixel-size-um", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pixel size (µm/px); default: read from each image's metadata, else px.")
@job_precision_option
@significant_bits_option
@scene_option
@click.option("--part-size", type=int, default=None, help="Upload part size (MiB, >= 5).")
@click.option("--concurrency", default=4, show_default=True, help="Parts uploaded at once.")
@click.option("--wait", is_flag=True, help="Follow the jobs to their end (exit 1 if one fails).")
@api_options
def submit(paths, model, model_version, labels, webhook, tile_size, halo, pixel_size_um,
           precision, significant_bits, scene, part_size, concurrency, wait, api_url,
           api_key) -> None:
    """Segment PATHS (local files, or folders of them, are uploaded through the API,
    resumably; URLs such as s3://... are passed on). Several images, or the scenes of a
    local multi-image OME-TIFF (one job each, --scene), make one batch."""
    options = {k: v for k, v in dict(model=model, model_version=model_version,
                                     tile_size=tile_size, halo=halo,
                                     webhook_url=webhook,
                                     pixel_size_um=pixel_size_um,
                                     precision=precision,
                                     significant_bits=significant_bits).items()
               if v is not None}
    labels = _labels(labels)
    ledger = default_ledger()

    def body() -> int:
        check_local_images(paths)  # before anything is uploaded
        with ApiClient(api_url, api_key) as client:
            items, files = [], []
            with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                          DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                          console=console) as bar:
                for source in paths:
                    path = Path(source)
                    remote = "://" in source and not path.exists()
                    scenes = scenes_of(source if remote else str(path.resolve()), scene)
                    if len(scenes) > 1:
                        console.print(f"{source}: {len(scenes)} scenes, one job each (--scene "
                                      "N reads one)", soft_wrap=True, highlight=False)
                    if remote:
                        items += [_with_scene({"source_url": source}, s) for s in scenes]
                        continue
                    up = upload_file(client, path, ledger, concurrency=concurrency,
                                     part_size=part_size * 1024 * 1024 if part_size else None,
                                     progress=_byte_progress(bar, path.name))
                    key = f"cli-upload-{up['id']}"  # one upload, a job per scene
                    items += [_with_scene({"upload_id": up["id"], "idempotency_key": key}, s)
                              for s in scenes]
                    files.append(path)
            if len(items) == 1:
                jobs = [client.submit({**items[0], **options, "labels": labels})]
            else:
                batch = client.submit_batch({"jobs": items, **options, "labels": labels})
                console.print(f"batch {batch['id']}: {batch['jobs_total']} jobs (side by side "
                              f"once done: pelletseg results --batch {batch['id']}; on the "
                              f"dashboard: {client.base_url}/?batch={batch['id']})",
                              soft_wrap=True, highlight=False)
                jobs = sorted(batch["jobs"], key=lambda j: j["created_at"])
            for path in files:
                ledger.forget(client.base_url, path)
            for job in jobs:
                console.print(f"job {job['id']} {job['status']}: {job['source_url']}")
            if not wait:
                return 0
            return follow(client, [j["id"] for j in jobs])

    run_client(body)


def _with_scene(item: dict, scene: int | None) -> dict:
    """A batch item with its ``scene`` (and a per-scene idempotency key), or as it is."""
    if scene is None:
        return item
    keyed = {"idempotency_key": f"{item['idempotency_key']}-scene{scene}"} if (
        "idempotency_key" in item) else {}
    return {**item, **keyed, "scene": scene}


def follow(client: ApiClient, job_ids: list[str], poll: float = 1.0) -> int:
    """Progress bars (rows done / total) until every job ended (a job's warnings printed once,
    as soon as its planner stored them); prints the phase fractions of the jobs that
    succeeded and the errors of the others.

    Returns:
        0 if every job succeeded, else 1.
    """
    from cli.run import print_fractions, print_new_warnings, report_heading

    final: dict[str, dict] = {}
    warned: set[str] = set()
    said: set[str] = set()  # each warning message once, whichever job it is of
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                  MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {j: bar.add_task(f"{j[:8]} queued", total=None) for j in job_ids}
        while len(final) < len(job_ids):
            for job_id, task in tasks.items():
                if job_id in final:
                    continue
                job = client.job(job_id)
                if job.get("warnings") and job_id not in warned:  # once, as soon as planned
                    warned.add(job_id)
                    print_new_warnings(bar.console, f"{job_id[:8]} ", job["warnings"], said)
                bar.update(task, total=job["rows_total"], completed=job["rows_done"],
                           description=f"{job_id[:8]} {job['status']}")
                if job["status"] in TERMINAL:
                    final[job_id] = job
            if len(final) < len(job_ids):
                time.sleep(poll)
    for job_id in job_ids:
        job = final[job_id]
        if job["status"] == "succeeded":
            if len(job_ids) > 1:  # which image each table is of
                console.print("\n" + report_heading(job["source_url"], job.get("scene"),
                                                    job_id), style="bold", markup=False,
                              highlight=False)
            print_fractions(client.results(job_id)["fractions"])
        else:
            reason = f": {job['error']}" if job["error"] else ""
            console.print(f"job {job_id} {job['status']}{reason}", style="red")
    return 0 if all(j["status"] == "succeeded" for j in final.values()) else 1


@click.command("jobs")
@click.option("--status", default=None, help="Only jobs in this status.")
@click.option("--batch", default=None, help="Only jobs of this batch id.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE; repeatable.")
@click.option("--limit", default=20, show_default=True, help="Jobs shown.")
@api_options
def jobs_cmd(status, batch, labels, limit, api_url, api_key) -> None:
    """List jobs, newest first."""
    def body() -> int:
        with ApiClient(api_url, api_key) as client:
            page = client.jobs(status=status, batch=batch, limit=limit,
                               label=[f"{k}:{v}" for k, v in _labels(labels).items()])
        columns = ("id", "status", "rows", "Mpx/s", "created", "source")
        lines = []
        for j in page["jobs"]:
            rows = f"{j['rows_done']}/{j['rows_total']}" if j["rows_total"] else "-"
            speed = f"{j['throughput_mpx_s']:.2f}" if j["throughput_mpx_s"] else "-"
            lines.append((j["id"], j["status"], rows, speed, j["created_at"][:19],
                          source_name(j["source_url"])))
        if not console.is_terminal:  # piped: tab-separated, one job a line
            for line in (columns, *lines):
                click.echo("\t".join(line))
            return 0
        table = Table()
        for column in columns:
            table.add_column(column, no_wrap=column == "id")
        for line in lines:
            table.add_row(*line)
        console.print(table)
        return 0

    run_client(body)


@click.command("status")
@click.argument("job_id")
@api_options
def status_cmd(job_id, api_url, api_key) -> None:
    """A job's status, rows, timings, error and (once succeeded) phase fractions."""
    from cli.run import print_fractions

    def body() -> int:
        with ApiClient(api_url, api_key) as client:
            j = client.job(job_id)
            console.print(f"job {j['id']}  {j['status']}")
            console.print(f"  source   {j['source_url']}"
                          + ("" if j.get("scene") is None else f" (scene {j['scene']})"))
            console.print(f"  model    {j['model']['name']} {j['model']['version'] or ''}")
            console.print(f"  rows     {j['rows_done']} done, {j['rows_running']} running, "
                          f"{j['rows_pending']} pending, {j['rows_failed']} failed "
                          f"of {j['rows_total'] or '?'}")
            console.print(f"  created  {j['created_at']}  finished {j['finished_at'] or '-'}")
            if j["batch_id"]:
                console.print(f"  batch    {j['batch_id']}")
            if j["error"]:
                console.print(f"  error    {j['error']}", style="red")
            w = j.get("webhook")
            if j.get("webhook_url") and w and w["status"]:  # none set: nothing to say
                console.print(f"  webhook  {w['status']} after {w['attempts']} attempt(s)"
                              + (f": {w['last_error']}" if w["last_error"] else ""))
            elif j.get("webhook_url"):
                console.print(f"  webhook  {j['webhook_url']}, notified when the job ends")
            if j["status"] == "succeeded":  # its warnings under the phase table
                print_fractions(client.results(job_id)["fractions"])
            else:
                for line in warning_lines(j.get("warnings")):
                    console.print(f"  {line}", style="yellow", markup=False, highlight=False)
        return 0

    run_client(body)


@click.command("watch")
@job_or_batch("Follow every job of this batch instead (a bar each).")
@api_options
def watch_cmd(job_id, batch_id, api_url, api_key) -> None:
    """Follow a job (or with --batch every job of a batch) to its end with a progress bar
    each (exit 0 if every one succeeded, else 1)."""
    def body() -> int:
        with ApiClient(api_url, api_key) as client:
            if batch_id is None:
                return follow(client, [job_id])
            jobs = client.batch(batch_id)["jobs"]
            return follow(client, [j["id"] for j in sorted(jobs, key=lambda j: j["created_at"])])

    run_client(body)


@click.command("cancel")
@job_or_batch("Cancel every job of this batch that has not ended instead.")
@api_options
@home_option
def cancel_cmd(job_id, batch_id, api_url, api_key, home) -> None:
    """Cancel a job that has not ended, or with --batch every such job of a batch: through the
    API, or with --home on the local stack (e.g. a job left interrupted by Ctrl-C on
    pelletseg run)."""
    if home is not None:
        from cli.local_jobs import cancel_local

        run_local(cancel_local, get_settings(home=home), job_id, batch_id)
        return

    def body() -> int:
        with ApiClient(api_url, api_key) as client:
            if batch_id is None:
                jobs = [client.cancel(job_id)]
            else:
                batch = client.cancel_batch(batch_id)
                cancelled = set(batch["cancelled"])
                jobs = [j for j in batch["jobs"] if j["id"] in cancelled]
        for job in sorted(jobs, key=lambda j: j["created_at"]):
            console.print(f"job {job['id']} {job['status']}")
        return 0

    run_client(body)


@click.command("delete")
@job_or_batch("Delete every job of this batch that has ended or was interrupted instead.")
@api_options
@home_option
def delete_cmd(job_id, batch_id, api_url, api_key, home) -> None:
    """Delete a job that has ended or was interrupted, or with --batch every such job of a
    batch: its outputs, row checkpoints and converted source are removed from the store (the
    source image is kept); the job stays listed as deleted (pelletseg jobs --status deleted).
    Through the API, or with --home on the local stack. Download what you need first
    (pelletseg results JOB --out DIR)."""
    from cli.local_jobs import delete_local, deleted_line

    if home is not None:
        run_local(delete_local, get_settings(home=home), job_id, batch_id)
        return

    def body() -> int:
        with ApiClient(api_url, api_key) as client:
            if batch_id is None:
                job = client.delete(job_id)
                click.echo(deleted_line(job["id"], job["objects_removed"], job["bytes_removed"]))
            else:
                batch = client.delete_batch(batch_id)
                click.echo(f"batch {batch_id}: {len(batch['deleted'])} jobs deleted, "
                           f"{batch['objects_removed']} objects, "
                           f"{batch['bytes_removed'] / 1e6:.1f} MB removed")
        return 0

    run_client(body)


@click.command("results")
@job_or_batch("Instead of JOB_ID: the batch's table of sections, one CSV line per job "
              "(phase fractions, porosity, pellets, oxidised share, labels), printed or "
              "written into --out.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              callback=writable_folder, help="Download the outputs into this folder.")
@api_options
def results_cmd(job_id, batch_id, out, api_url, api_key) -> None:
    """Print a succeeded job's phase fractions, its share of low-confidence pixels per class
    and its microstructure summary; with --out, download its outputs. With --batch ID, the
    batch's sections side by side as CSV."""
    from cli.run import confidence_table, print_fractions, print_microstructure

    def body() -> int:
        with ApiClient(api_url, api_key) as client:
            if batch_id is not None:
                text = client.batch_results_csv(batch_id)
                if out is None:
                    click.echo(text, nl=False)
                    return 0
                dest = Path(out) / f"batch-{batch_id}-results.csv"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(text, encoding="utf-8")
                console.print(f"  {dest}")
                return 0
            res = client.results(job_id)
            print_fractions(res["fractions"])
            if res.get("confidence"):
                console.print(confidence_table(res["confidence"]))
            print_microstructure(client.microstructure(job_id))
            for name, url in sorted(res["files"].items()):
                if out is None:
                    console.print(f"  {name:15s} {url}")
                    continue
                dest = client.download(url, Path(out) / name)
                console.print(f"  {name:15s} {dest}")
        return 0

    run_client(body)


def resume_remote(api_url: str, api_key: str | None, job_id: str | None, wait: bool, *,
                  batch_id: str | None = None) -> None:
    """``pelletseg resume JOB --api URL`` (or ``--batch ID``: the batch's failed and
    interrupted jobs): resume through the API, optionally follow the jobs resumed."""
    def body() -> int:
        with ApiClient(api_url, api_key) as client:
            if batch_id is None:
                job = client.resume(job_id)
                console.print(f"job {job['id']} {job['status']}")
                return follow(client, [job_id]) if wait else 0
            batch = client.resume_batch(batch_id)
            by_id = {j["id"]: j for j in batch["jobs"]}
            resumed = [by_id[resumed_id] for resumed_id in batch["resumed"]]
            console.print(f"batch {batch_id}: {len(resumed)} of {batch['jobs_total']} jobs "
                          "resumed", highlight=False)
            for job in resumed:
                console.print(f"job {job['id']} {job['status']}: {job['source_url']}",
                              soft_wrap=True, highlight=False)
            return follow(client, [j["id"] for j in resumed]) if wait else 0

    run_client(body)


def rerun_remote(api_url: str, api_key: str | None, job_id: str | None, model: str | None,
                 wait: bool, *, batch_id: str | None = None, pixel_size_um: float | None = None,
                 significant_bits: int | None = None, scene: int | None = None) -> None:
    """``pelletseg rerun JOB --api URL`` (or ``--batch ID``: a new batch of all its jobs):
    submit the new jobs through the API (``pixel_size_um`` / ``significant_bits`` replacing the
    earlier jobs' where given), optionally follow them."""
    name, version = split_model(model)
    body_json = {"model": name, "model_version": version, "pixel_size_um": pixel_size_um,
                 "significant_bits": significant_bits, "scene": scene}

    def body() -> int:
        with ApiClient(api_url, api_key) as client:
            if batch_id is None:
                jobs = [client.rerun(job_id, body_json)]
            else:
                batch = client.rerun_batch(batch_id, body_json)
                jobs = sorted(batch["jobs"], key=lambda j: j["created_at"])
                console.print(f"batch {batch['id']}: {len(jobs)} jobs", highlight=False)
            for job in jobs:
                console.print(f"job {job['id']} {job['status']}: {job['source_url']}",
                              soft_wrap=True, highlight=False)
            return follow(client, [j["id"] for j in jobs]) if wait else 0

    run_client(body)


COMMANDS = (submit, jobs_cmd, status_cmd, watch_cmd, cancel_cmd, delete_cmd, results_cmd)
