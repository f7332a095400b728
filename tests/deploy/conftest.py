"""Shared helpers of the deploy/ checks: where things are, and the PELLETSEG_* names that
storage/settings.py reads (derived from the Settings class at test time, never copied)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from storage.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

#: Variables a pelletseg container may get besides PELLETSEG_* settings: the pod name (for the
#: Celery node name) and the AWS SDK's own credentials/endpoint variables (S3-compatible stores).
NON_SETTING_ENV = frozenset({"POD_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                             "AWS_ENDPOINT_URL_S3"})


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


def linter(name: str) -> str | None:
    """``name`` from the linters' own virtual environment (.venv-checkov) or PATH."""
    local = ROOT / ".venv-checkov" / "bin" / name
    return str(local) if local.exists() else shutil.which(name)


@pytest.fixture(scope="session")
def setting_names() -> set[str]:
    return setting_env_names()
