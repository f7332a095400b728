"""One-line descriptions of the ``pelletseg`` commands for the top-level ``--help``.

Click shortens a command's docstring to its first sentence and about 45 characters in the
command list, which cut most descriptions mid-phrase ("Segment SOURCE (a path or URL)
through the queue and print..."). Each command here gets its own ``short_help``, which click
wraps but never truncates; :func:`apply_short_help` sets them on the group.
"""

from __future__ import annotations

import click

__all__ = ["SHORT_HELP", "apply_short_help"]

#: Command name -> its one-line description in ``pelletseg --help``.
SHORT_HELP: dict[str, str] = {
    "run": "Segment one image (path or URL) with local workers and print its phase fractions.",
    "demo": "Build a mosaic of shipped NASA EBC micrographs and segment it with the demo model.",
    "resume": "Resume a failed, cancelled or interrupted job: only the rows not done are redone.",
    "rerun": "Segment an earlier job's image again as a new job, e.g. with a newer model.",
    "migrate": "Create or upgrade the job table to the newest schema (Alembic).",
    "models": "List registered model packages and what each was trained on.",
    "serve": "Run the HTTP API and dashboard; prints their URLs and how to get an API key.",
    "worker": "Run a queue worker in the foreground (plan, rows and reduce tasks).",
    "apikey": "Create, list and revoke API keys of the HTTP API.",
    "submit": "Upload images (resumably) or pass URLs to a running API and start jobs.",
    "jobs": "List the jobs of a running API, newest first.",
    "status": "Show a job's status, rows, error and (once succeeded) phase fractions.",
    "watch": "Follow a job to its end with a progress bar.",
    "cancel": "Cancel a job that has not ended (through the API, or locally with --home).",
    "delete": "Delete an ended job's outputs and checkpoints (through the API, or with --home).",
    "results": "Print a succeeded job's fractions, confidence and microstructure; --out downloads.",
    "train": "Train a segmentation model on a dataset.yaml and write a model package.",
    "evaluate": "Measure a model package on a labelled dataset split (mIoU, confusion, report).",
    "bench": "Benchmark this machine: model-only limit, today's path, MONAI and a baseline.",
    "analyze": "Microstructure (pellets, porosity, sizes, profiles) of any label map.",
    "agreement": "Measure which tile geometries and runtimes keep the reference labels.",
}


def apply_short_help(group: click.Group) -> None:
    """Give every command of ``group`` its line from :data:`SHORT_HELP`; a command without
    one keeps click's default (its docstring's first sentence)."""
    for name, command in group.commands.items():
        if name in SHORT_HELP:
            command.short_help = SHORT_HELP[name]
