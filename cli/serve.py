"""``pelletseg serve``: run the HTTP API with uvicorn.

The API process never imports torch or ``worker``: :func:`prepare_server` migrates the job
table and publishes the bundled model packages (file copies and a table insert) through
:func:`submission.prepare`.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import home_option
from core.settings import Settings, get_settings
from storage.errors import StorageError


def prepare_server(settings: Settings) -> None:
    """Create ``home``, migrate the job table, publish the bundled model packages.

    Raises:
        StorageError: the job table or blob store is unreachable.
    """
    from submission import prepare

    prepare(settings)


def banner(settings: Settings, home: Path | None = None) -> list[str]:
    """What ``pelletseg serve`` prints before it starts: the dashboard and API docs URLs, and
    how to get an API key (or that none is needed)."""
    host = settings.api_host
    if host in ("0.0.0.0", "::", ""):  # every interface: this machine's loopback works
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    base = f"http://{host}:{settings.api_port}"
    lines = [f"dashboard  {base}/", f"API docs   {base}/docs"]
    if settings.api_auth:
        where = f" --home {home}" if home is not None else ""
        lines.append(f"API key    pelletseg apikey create NAME{where}  (prints the key once; "
                     "clients pass it as --api-key or PELLETSEG_API_KEY)")
    else:
        lines.append("API key    none needed: authentication is off (--no-auth)")
    lines.append(f"clients    pelletseg submit IMAGE --api {base}")
    return lines


@click.command("serve")
@click.option("--host", default=None,
              help="Address to bind [default: PELLETSEG_API_HOST or 127.0.0.1].")
@click.option("--port", type=int, default=None,
              help="Port to bind [default: PELLETSEG_API_PORT or 8000].")
@click.option("--no-auth", is_flag=True,
              help="Serve /v1 without API keys; refused unless the host is 127.0.0.1.")
@home_option
def serve(host: str | None, port: int | None, no_auth: bool, home: Path | None) -> None:
    """Run the HTTP API (OpenAPI page at /docs). Every /v1 route needs an API key from
    `pelletseg apikey create NAME` unless --no-auth is given on 127.0.0.1."""
    from api.auth import AuthConfigError, check_auth_binding, is_loopback

    overrides: dict = dict(home=home, api_host=host, api_port=port)
    if no_auth:
        overrides["api_auth"] = False
    settings = get_settings(**overrides)
    try:
        check_auth_binding(settings)
    except AuthConfigError as e:
        raise click.UsageError(str(e)) from e
    if not is_loopback(settings.api_host) and "file" in settings.allowed_source_schemes \
            and not settings.source_roots:
        raise click.UsageError(
            f"the API would bind {settings.api_host} and accept file sources from anywhere on "
            "this machine's disk: set PELLETSEG_SOURCE_ROOTS to the folders jobs may read "
            "(JSON list), or drop 'file' from PELLETSEG_ALLOWED_SOURCE_SCHEMES")
    try:
        prepare_server(settings)
    except StorageError as e:
        raise click.ClickException(str(e)) from e
    if not settings.api_auth:
        click.echo(f"warning: authentication is off; only clients on {settings.api_host} "
                   "can reach this API", err=True)
    for line in banner(settings, home):
        click.echo(line)

    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port,
                log_level="info")
