"""``pelletseg apikey``: create, list and revoke API keys of the HTTP API."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import home_option
from core.settings import Settings, get_settings
from storage.errors import StorageError


def _keys(home: Path | None):
    """The key table of the stack at ``home``, migrated first."""
    from storage.jobtable import job_table, upgrade

    settings: Settings = get_settings(home=home)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    return job_table(settings).api_keys


@click.group("apikey")
def apikey() -> None:
    """Manage the API keys of the HTTP API (`pelletseg serve`)."""


@apikey.command("create")
@click.argument("name")
@home_option
def create_cmd(name: str, home: Path | None) -> None:
    """Create a key named NAME (who or what uses it); the key is printed on the last line,
    once: only its hash is stored."""
    try:
        record, key = _keys(home).create(name)
    except (StorageError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"created API key {record.id} ({record.name}); it is shown only this once, "
               "send it as 'Authorization: Bearer <key>':", err=True)
    click.echo(key)


@apikey.command("list")
@home_option
def list_cmd(home: Path | None) -> None:
    """List keys: id, name, prefix, created, revoked (never the keys themselves)."""
    try:
        records = _keys(home).list()
    except StorageError as e:
        raise click.ClickException(str(e)) from e
    for r in records:
        revoked = r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "-"
        click.echo(f"{r.id}\t{r.name}\t{r.prefix}...\tcreated "
                   f"{r.created_at.isoformat(timespec='seconds')}\trevoked {revoked}")


@apikey.command("revoke")
@click.argument("key_id", type=int)
@home_option
def revoke_cmd(key_id: int, home: Path | None) -> None:
    """Revoke key KEY_ID (see `pelletseg apikey list`); requests with it then get 403."""
    try:
        record = _keys(home).revoke(key_id)
    except StorageError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"revoked API key {record.id} ({record.name}, {record.prefix}...)")
