"""Click options shared by the ``pelletseg`` commands: ``--home`` (the embedded stack's
folder) for the commands that run the stack, ``--api``/``--api-key`` for the clients of the
HTTP API (``submit``, ``jobs``, ``status``, ``watch``, ``cancel``, ``results``, ``resume
--api``)."""

from __future__ import annotations

import functools
import tempfile
import typing
from pathlib import Path

import click

from cli.sniff import NotAnImageError, expand_folders
from core.spec import Precision

#: Where ``pelletseg serve`` listens by default.
DEFAULT_API_URL = "http://127.0.0.1:8000"

#: The precisions a worker and a job know (``PELLETSEG_PRECISION``, ``JobSpec.precision``).
PRECISIONS = typing.get_args(Precision)

#: ``--precision`` of a job (``pelletseg run``, ``pelletseg submit``): its spec's ``precision``.
job_precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), default=None,
    help="Inference precision this job asks of every worker (overrides their "
         "PELLETSEG_PRECISION; fp32 pins float32); default: each worker's setting.",
)


#: ``--significant-bits`` of a job (``pelletseg run``, ``pelletseg submit``): its spec's
#: ``significant_bits``.
significant_bits_option = click.option(
    "--significant-bits", type=click.IntRange(8, 16), default=None,
    help="Bits a 16-bit image's camera fills, e.g. 12 for a 12-bit camera's 16-bit TIFF "
         "(the model sees the top 8 of them); default: what the file records (OME-XML, CZI), "
         "else 16. Ignored for 8-bit and float images.",
)


def _images(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    try:
        return expand_folders(value)
    except NotAnImageError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from e


def images_argument(name: str):
    """The images of ``pelletseg run`` and ``pelletseg submit``: paths or URLs, one or more;
    a local folder stands for the image files directly in it (:func:`cli.sniff.expand_folders`;
    a folder with none is refused, exit 2)."""
    return click.argument(name, nargs=-1, required=True, callback=_images)


def split_model(model: str | None) -> tuple[str | None, str | None]:
    """``--model NAME`` or ``NAME:VERSION`` -> ``(name, version)``, each None when not given
    (None: the default model; no version: its newest)."""
    name, _, version = (model or "").partition(":")
    return name or None, version or None


def job_or_batch(batch_help: str):
    """``JOB_ID`` or ``--batch ID``, exactly one (``resume``, ``cancel``, ``watch``,
    ``results``): the command gets ``job_id`` and ``batch_id``, one of them None; neither or
    both is a usage error (exit 2)."""
    def decorate(fn):
        @functools.wraps(fn)
        def checked(*args, job_id=None, batch_id=None, **kwargs):
            if (job_id is None) == (batch_id is None):
                raise click.UsageError("give a JOB_ID or --batch ID (one of them)")
            return fn(*args, job_id=job_id, batch_id=batch_id, **kwargs)

        with_batch = click.option("--batch", "batch_id", default=None, help=batch_help)(checked)
        return click.argument("job_id", required=False)(with_batch)
    return decorate


home_option = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder of the embedded stack's state (database, store, broker); env PELLETSEG_HOME.",
)


def api_options(fn=None, *, default: str | None = DEFAULT_API_URL,
                api_help: str = "API base URL (env PELLETSEG_API_URL)."):
    """Click options ``--api URL`` (parameter ``api_url``, env ``PELLETSEG_API_URL``) and
    ``--api-key KEY`` (parameter ``api_key``, env ``PELLETSEG_API_KEY``), the same for every
    client command. Use as ``@api_options`` or ``@api_options(default=None, api_help=...)``
    (``resume``: no ``--api`` means locally)."""

    def decorate(f):
        f = click.option("--api-key", envvar="PELLETSEG_API_KEY", default=None,
                         help="API key from `pelletseg apikey create NAME` "
                              "(env PELLETSEG_API_KEY).")(f)
        return click.option("--api", "api_url", envvar="PELLETSEG_API_URL", default=default,
                            show_default=default is not None, help=api_help)(f)

    return decorate(fn) if fn is not None else decorate


def writable_folder(ctx, param, value):
    """Click callback of an output folder (``--out``): the folder is made, with its parents,
    written to once, and what was made for the check is removed again, so one that cannot
    take the outputs (a read-only mount, no permission, a file in the way) is refused before
    any work instead of after it (``pelletseg run`` ran the whole job, then ended in a
    traceback), and a command refused for another reason leaves nothing behind.

    Raises:
        click.BadParameter: the folder cannot be made or written to.
    """
    if value is None:
        return None
    made, parent = [], Path(value)
    while not parent.exists() and parent != parent.parent:
        made.append(parent)  # deepest first
        parent = parent.parent
    try:
        Path(value).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=value, prefix=".pelletseg-write-check-"):
            pass
    except OSError as e:
        raise click.BadParameter(f"{value}: this folder cannot be made or written to "
                                 f"({e.strerror or e}); choose one you can write to") from e
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
    return value


def local_or_api_options(verb: str):
    """The options of a command that drives local workers or, with ``--api``, asks the HTTP
    API (``resume``, ``rerun``): ``--workers`` (parameter ``workers``), ``--out``, ``--api`` /
    ``--api-key`` (no default: locally), ``--wait`` and ``--home``; ``verb`` (``Resume``,
    ``Rerun``) starts the ``--api`` help."""

    def decorate(f):
        f = home_option(f)
        f = click.option("--wait", is_flag=True,
                         help="With --api: follow the jobs to their end.")(f)
        f = api_options(default=None, api_help=f"{verb} through this API instead of locally "
                        "(env PELLETSEG_API_URL).")(f)
        f = click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                         default=None, callback=writable_folder, help="Copy the outputs into "
                         "this folder (a batch: a folder each, and its table).")(f)
        return click.option("--workers", default=2, show_default=True,
                            help="Local worker processes (0: use running workers).")(f)

    return decorate


def _pick_device(ctx, param, value: str) -> str:
    """``--device`` resolved as jobs resolve ``PELLETSEG_DEVICE`` (``auto``: CUDA if
    available, else CPU; :func:`worker.engine.devices.pick_device`)."""
    from worker.engine.devices import pick_device

    try:
        return str(pick_device(value))
    except RuntimeError as e:
        raise click.BadParameter(f"{value!r} is not a torch device ({e}); use auto, cpu, "
                                 "cuda or cuda:N") from e


device_option = click.option(
    "--device", default="auto", show_default=True, envvar="PELLETSEG_DEVICE",
    callback=_pick_device,
    help="torch device: auto (CUDA if available, else CPU; the default of jobs, env "
         "PELLETSEG_DEVICE), cpu, cuda, cuda:N.",
)
