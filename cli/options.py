"""Click options shared by every ``pelletseg`` command."""

from __future__ import annotations

from pathlib import Path

import click

home_option = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder of the embedded stack's state (database, store, broker); env PELLETSEG_HOME.",
)
