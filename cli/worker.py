"""``pelletseg worker``: one ``celery worker`` in the foreground, against the stack the
settings name (``--home`` for the embedded one). Several may run against one home or one
production stack; each takes tasks from the queues it is given."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from cli.options import home_option
from core.settings import get_settings
from queues.names import QUEUES
from storage.errors import StorageError


@click.command("worker")
@click.option("--queues", default=",".join(QUEUES), show_default=True,
              help="Comma-separated queues to consume (plan, rows, reduce).")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Tasks run at once (processes).")
@click.option("--beat", is_flag=True,
              help="Also run the reconciler on Celery beat's schedule (every worker already "
                   "reconciles every PELLETSEG_RECONCILE_SECONDS from its heartbeat thread; "
                   "optional).")
@home_option
def worker(queues: str, concurrency: int, beat: bool, home: Path | None) -> None:
    """Run a worker in the foreground (migrates the job table and publishes the bundled
    models first). Stop it with Ctrl-C: it finishes its current task."""
    from submission.stack import prepare
    from worker.local import ForeignCheckout, worker_command

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if unknown or not chosen:
        raise click.BadParameter(f"unknown queue(s) {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(QUEUES)}", param_hint="--queues")
    settings = get_settings(home=home)
    try:
        prepare(settings)
    except StorageError as e:
        raise click.ClickException(str(e)) from e
    name = f"pelletseg-{os.getpid()}@{socket.gethostname()}"
    try:
        argv, env = worker_command(settings, chosen, name, processes=concurrency, beat=beat)
    except ForeignCheckout as e:
        raise click.ClickException(str(e)) from e
    pool, slots = argv[argv.index("--pool") + 1], argv[argv.index("-c") + 1]
    click.echo(f"worker {name}: queues {','.join(chosen)}, concurrency {slots} ({pool} pool)",
               err=True)
    os.execve(argv[0], argv, env)
