"""Shared helpers of the deploy/ checks: where things are, and the PELLETSEG_* names that
core/settings.py reads (derived from the Settings class at test time, never copied)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

#: Variables a pelletseg container may get besides PELLETSEG_* settings: the pod name (for the
#: Celery node name), the AWS SDK's own credentials/endpoint variables (S3-compatible stores)
#: and the CPU worker's threads pool size with PELLETSEG_STREAM_REDUCE (read by its command's
#: shell, not by Settings).
NON_SETTING_ENV = frozenset({"POD_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                             "AWS_ENDPOINT_URL_S3", "REDUCE_CONCURRENCY"})


def setting_env_names() -> set[str]:
    """``PELLETSEG_<FIELD>`` for every field of :class:`Settings`."""
    return {f"PELLETSEG_{name.upper()}" for name in Settings.model_fields}


def settings_from_env(env: dict[str, str]) -> Settings:
    """A Settings built from ``env`` exactly as the container would read it (pydantic parses
    and validates each value: JSON lists/dicts, ints, bools)."""
    import os

    saved = {k: v for k, v in os.environ.items() if k.startswith("PELLETSEG_")}
    for k in saved:
        del os.environ[k]
    os.environ.update({k: v for k, v in env.items() if k.startswith("PELLETSEG_")})
    try:
        return Settings()
    finally:
        for k in [k for k in os.environ if k.startswith("PELLETSEG_")]:
            del os.environ[k]
        os.environ.update(saved)


def celery_pool(argv: list[str]) -> tuple[str, str]:
    """``(--pool, --concurrency)`` of a ``celery worker`` command line, as written."""
    return argv[argv.index("--pool") + 1], argv[argv.index("--concurrency") + 1]


def assert_pool_fits_rows_in_flight(argv: list[str], settings: Settings, where: str) -> None:
    """The pool of a worker command agrees with the ``PELLETSEG_ROWS_IN_FLIGHT`` its container
    gets: a threads pool of exactly that many, or solo (one task) when it is 1, as
    ``worker/local.py::worker_command`` starts local workers. Prefetch 1 in both cases, so the
    worker reserves no message it does not start at once."""
    pool, concurrency = celery_pool(argv)
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1", where
    if pool == "threads":
        assert concurrency == str(settings.rows_in_flight), (
            f"{where}: --concurrency {concurrency} but PELLETSEG_ROWS_IN_FLIGHT="
            f"{settings.rows_in_flight}")
    else:
        assert (pool, concurrency, settings.rows_in_flight) == ("solo", "1", 1), where


def assert_pool_fits_stream_reduce(argv: list[str], settings: Settings, concurrency: int,
                                   where: str) -> None:
    """The pool of a CPU (plan, reduce) worker command agrees with the
    ``PELLETSEG_STREAM_REDUCE`` its container gets: solo (one task at a time, as before the
    streaming stitcher) when off; when on, a threads pool of ``concurrency`` slots, 2 to 32
    (each running job's stitcher holds one for the whole job). Prefetch 1 in both cases."""
    pool, n = celery_pool(argv)
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1", where
    if settings.stream_reduce:
        assert (pool, n) == ("threads", str(concurrency)) and 2 <= concurrency <= 32, (
            f"{where}: --pool {pool} --concurrency {n} with PELLETSEG_STREAM_REDUCE=true")
    else:
        assert (pool, n) == ("solo", "1"), f"{where}: --pool {pool} --concurrency {n}"


class ShellRefused(AssertionError):
    """A worker's shell-form command exited before it started celery (its stderr)."""


def worker_argv(command: list[str], env: dict[str, str]) -> list[str]:
    """The ``celery ...`` argv a worker container runs: its command as written, or for a shell
    form (``sh -c SCRIPT``) what SCRIPT execs, found by running it under /bin/sh (dash on
    Debian and Ubuntu, as in the worker image) with exactly ``env`` and a stand-in ``celery``
    on PATH that prints its arguments.

    Raises:
        ShellRefused: the script exited non-zero instead (stderr in the message).
    """
    if command[:2] != ["sh", "-c"]:
        return list(command)
    with tempfile.TemporaryDirectory() as bin_dir:
        fake = Path(bin_dir) / "celery"
        fake.write_text('#!/bin/sh\nprintf "%s\\0" celery "$@"\n')
        fake.chmod(0o755)
        proc = subprocess.run(["/bin/sh", "-c", *command[2:]], capture_output=True, timeout=30,
                              env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False)
    if proc.returncode != 0:
        raise ShellRefused(proc.stderr.decode())
    return proc.stdout.decode().split("\0")[:-1]


def linter(name: str) -> str | None:
    """``name`` from the linters' own virtual environment (.venv-checkov) or PATH."""
    local = ROOT / ".venv-checkov" / "bin" / name
    return str(local) if local.exists() else shutil.which(name)


@pytest.fixture(scope="session")
def setting_names() -> set[str]:
    return setting_env_names()
