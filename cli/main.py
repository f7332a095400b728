"""The ``pelletseg`` command line. Every command that touches the stack accepts ``--home``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.analyze import analyze
from cli.apikey import apikey
from cli.bench import agreement, bench
from cli.evaluate import evaluate
from cli.help import apply_short_help
from cli.options import (
    home_option,
    images_argument,
    job_or_batch,
    job_precision_option,
    local_or_api_options,
    significant_bits_option,
    writable_folder,
)
from cli.remote import COMMANDS as REMOTE_COMMANDS
from cli.scenes import scene_option
from cli.serve import serve
from cli.train import train
from cli.worker import worker
from core.settings import get_settings
from storage.errors import StorageError


def extra_providing(module: str) -> str | None:
    """The optional dependency group (pyproject's extras: ``worker``, ``stages``, ``train``,
    ``bench``, ``formats``) that installs the top-level ``module``, read from this
    install's own metadata; the first that lists a distribution of that name (compared as
    PEP 503 normalised names), None where none does."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = canonicalize_name(module)
    try:
        requires = metadata.requires("pelletseg") or []
        extras = metadata.metadata("pelletseg").get_all("Provides-Extra") or []
    except metadata.PackageNotFoundError:
        return None
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and canonicalize_name(req.name) == wanted:
            found = next((x for x in extras if req.marker.evaluate({"extra": x})), None)
            if found is not None:
                return found
    return None


#: Commands whose whole work needs one extra (each holds ``[worker]``): what they ask for
#: whichever of its packages is missing first.
COMMAND_EXTRAS = {"bench": "bench", "agreement": "bench", "train": "train", "evaluate": "train"}


class Commands(click.Group):
    """The command group: a command that needs a package of an extra this install lacks
    (``pelletseg bench`` with ``pip install .`` only) says which extra to install instead of
    ending in a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as e:
            module = (e.name or "").partition(".")[0]
            extra = extra_providing(module) if module else None
            if extra is None:
                raise
            extra = COMMAND_EXTRAS.get(ctx.invoked_subcommand or "", extra)
            raise click.ClickException(
                f"pelletseg {ctx.invoked_subcommand} needs {module}, which this install lacks: "
                f"pip install 'pelletseg[{extra}]' (from a checkout: pip install -e "
                f"'.[{extra}]'; '.[dev]' installs every extra)") from e


@click.group(cls=Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(package_name="pelletseg", prog_name="pelletseg",
                      message="%(prog)s %(version)s")
def main() -> None:
    """pelletseg: segment gigapixel pellet micrographs into phases and report phase fractions."""


@main.command("run")
@images_argument("sources")
@click.option("--model", default=None,
              help="Registered model: NAME (its newest version) or NAME:VERSION "
                   "(default: PELLETSEG_DEFAULT_MODEL).")
@click.option("--workers", default=2, show_default=True,
              help="Local worker processes to start (0: use running workers).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              callback=writable_folder,
              help="Copy the outputs into this folder (several images: a folder each, and "
                   "the batch table).")
@click.option("--pixel-size-um", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pixel size (µm/px); default: read from the image's metadata, else px.")
@job_precision_option
@significant_bits_option
@scene_option
@home_option
def run_cmd(sources: list[str], model: str | None, workers: int, out: Path | None,
            pixel_size_um: float | None, precision: str | None, significant_bits: int | None,
            scene: int | str | None, home: Path | None) -> None:
    """Segment SOURCES (paths, folders of images or URLs) through the queue and print their
    phase fractions and microstructure summaries; several images (or the scenes of a
    multi-image OME-TIFF) make one batch and a table of them side by side (one CSV line per
    image)."""
    from cli.run import run

    sys.exit(_guard(lambda: run(get_settings(home=home), list(sources), model=model,
                                workers=workers, out=out, pixel_size_um=pixel_size_um,
                                precision=precision, significant_bits=significant_bits,
                                scene=scene)))


@main.command("demo")
@click.option("--mpx", default=12.0, show_default=True, help="Size of the demo mosaic (megapixels).")
@click.option("--workers", default=2, show_default=True, help="Local worker processes.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              callback=writable_folder, help="Copy the outputs into this folder.")
@home_option
def demo_cmd(mpx: float, workers: int, out: Path | None, home: Path | None) -> None:
    """Build a mosaic of real micrographs (shipped NASA EBC samples) and segment it."""
    from cli.run import console, run
    from imaging.mosaic import build_mosaic, demo_sources

    settings = get_settings(home=home)
    settings.ensure_home()
    mosaic = settings.home / "demo" / f"mosaic-{mpx:g}mpx.tif"
    if not mosaic.exists():
        mosaic.parent.mkdir(parents=True, exist_ok=True)
        w, h = build_mosaic(demo_sources(), mpx, mosaic)
        console.print(f"demo mosaic {w} x {h} px written to {mosaic}")
    sys.exit(_guard(lambda: run(settings, str(mosaic), model=None, workers=workers, out=out,
                                labels={"demo": True})))


@main.command("resume")
@job_or_batch("Resume every failed or interrupted job of this batch instead.")
@local_or_api_options("Resume")
def resume_cmd(job_id: str | None, batch_id: str | None, workers: int, out: Path | None,
               api_url: str | None, api_key: str | None, wait: bool, home: Path | None) -> None:
    """Resume a failed or cancelled job, or with --batch every failed or interrupted job of a
    batch: only rows that are not done are redone (or only the reducer when every row is
    done). Locally with local workers, or with --api through the HTTP API (its workers)."""
    if api_url:
        from cli.remote import resume_remote

        resume_remote(api_url, api_key, job_id, wait, batch_id=batch_id)
        return
    from cli.run import resume

    sys.exit(_guard(lambda: resume(get_settings(home=home), job_id, workers=workers, out=out,
                                   batch_id=batch_id)))


@main.command("rerun")
@job_or_batch("Rerun every job of this batch instead, as one new batch.")
@click.option("--model", default=None,
              help="NAME or NAME:VERSION (default: each earlier job's model, newest version).")
@click.option("--pixel-size-um", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pixel size (µm/px) replacing the earlier job's (default: kept).")
@click.option("--significant-bits", type=click.IntRange(8, 16), default=None,
              help="Significant bits of 16-bit images replacing the earlier job's, e.g. 12 "
                   "after a 12-bit camera's job was refused (default: kept).")
@click.option("--scene", type=click.IntRange(min=0), default=None,
              help="Scene of a multi-image OME-TIFF replacing the earlier job's, e.g. after "
                   "the file was refused without one (default: kept; not with --batch).")
@local_or_api_options("Rerun")
def rerun_cmd(job_id: str | None, batch_id: str | None, model: str | None,
              pixel_size_um: float | None, significant_bits: int | None, scene: int | None,
              workers: int, out: Path | None, api_url: str | None, api_key: str | None,
              wait: bool, home: Path | None) -> None:
    """Segment an earlier job's image again as a new job (its labels, pixel size, precision,
    significant bits and scene kept unless given; label rerun_of names the earlier job), e.g. with a
    better model: --model NAME or NAME:VERSION, default the same model at its newest version.
    --batch: every job of a batch, as one new batch. The earlier job is left as it is (a
    deleted one may be rerun: its image is kept). Locally with local workers, or with --api
    through the HTTP API."""
    if scene is not None and batch_id is not None:
        raise click.UsageError("--scene reruns one job: give the job whose scene to change, "
                               "not --batch")
    corrections = {"pixel_size_um": pixel_size_um, "significant_bits": significant_bits,
                   "scene": scene}
    if api_url:
        from cli.remote import rerun_remote

        rerun_remote(api_url, api_key, job_id, model, wait, batch_id=batch_id, **corrections)
        return
    from cli.run import rerun

    sys.exit(_guard(lambda: rerun(get_settings(home=home), job_id, model=model, workers=workers,
                                  out=out, batch_id=batch_id, **corrections)))


@main.command("migrate")
@home_option
def migrate_cmd(home: Path | None) -> None:
    """Create or upgrade the job table to the newest schema (Alembic)."""
    from storage.jobtable.engine import upgrade

    settings = get_settings(home=home)
    settings.ensure_home()
    sys.exit(_guard(lambda: upgrade(settings.resolved_database_url) or 0))


@main.command("models")
@home_option
def models_cmd(home: Path | None) -> None:
    """List registered model packages (publishing the bundled ones first): name, version,
    network, weights sha256, test mIoU, the precision a CPU worker serves it at
    (``cpu_precision``: bfloat16 only on CPUs with bfloat16 units), its training data and the
    pixel size it was trained at (where its model.json records one)."""
    from submission import prepare

    settings = get_settings(home=home)

    def show() -> int:
        from cli.modelinfo import cpu_serving, trained_at, trained_on, with_bundled_domain

        registry = prepare(settings)
        for m in registry.table.models.list():
            miou = (m.metrics or {}).get("test_miou")
            pkg = with_bundled_domain(registry.meta(m.name, m.version))
            click.echo(f"{m.name}\t{m.version}\t{m.architecture}/{m.encoder}\t"
                       f"sha256 {m.sha256[:12]}\ttest mIoU {miou}\t{cpu_serving(pkg)}\t"
                       f"trained on {trained_on(pkg)}{trained_at(pkg)}")
        return 0

    sys.exit(_guard(show))


def _guard(fn) -> int:
    """Run a command body; storage and input errors print one clear line, not a traceback."""
    from submission import SubmissionError

    try:
        return fn()
    except (StorageError, SubmissionError) as e:
        click.echo(f"error: {e}", err=True)
        return 2


main.add_command(train)
main.add_command(evaluate)
main.add_command(apikey)
main.add_command(serve)
main.add_command(bench)
main.add_command(agreement)
main.add_command(worker)
main.add_command(analyze)
for _command in REMOTE_COMMANDS:
    main.add_command(_command)
apply_short_help(main)
