"""Fixtures for the Terraform checks: the terraform binary, the local AWS provider plugin
directory, a scratch copy of terraform/ (the repository stays clean: no .terraform folders
or lock files are written into it), and a private moto server that stands in for AWS."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import moto_server
from tests.terraform.hcl import TERRAFORM

#: Where a filesystem mirror of hashicorp/aws may lie (TF_PLUGIN_DIR first).
PLUGIN_DIR_CANDIDATES = (
    os.environ.get("TF_PLUGIN_DIR", ""),
    "/opt/tf-plugins",
    "~/.terraform.d/plugins",
    "~/.local/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
)


def find_plugin_dir() -> Path | None:
    """A directory laid out as ``registry.terraform.io/hashicorp/aws/<v>/<os_arch>/`` holding
    ``terraform-provider-aws_*``, or None."""
    for cand in PLUGIN_DIR_CANDIDATES:
        if not cand:
            continue
        base = Path(cand).expanduser()
        if any(base.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws_*")):
            return base
    return None


@dataclass
class Terraform:
    """Runs terraform with an isolated CLI configuration (no ~/.terraformrc, no plugin cache,
    no checkpoint calls, no prompts)."""

    exe: str
    plugin_dir: Path
    env: dict

    def __call__(self, *args: str, cwd: Path, timeout: float = 300, check: bool = True,
                 extra_env: dict | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env, **(extra_env or {}))
        proc = subprocess.run([self.exe, *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"terraform {' '.join(args[:2])} failed in {cwd} (rc {proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def popen(self, *args: str, cwd: Path, log: Path) -> subprocess.Popen:
        """Start terraform in the background, output to ``log``."""
        out = log.open("w")
        return subprocess.Popen([self.exe, *args], cwd=cwd, env=self.env, stdout=out,
                                stderr=subprocess.STDOUT)

    def init(self, cwd: Path, *extra: str) -> None:
        """``terraform init`` from the local plugin directory only (no registry access)."""
        self("init", "-input=false", "-no-color", f"-plugin-dir={self.plugin_dir}", *extra,
             cwd=cwd, timeout=120)


@pytest.fixture(scope="session")
def terraform(tmp_path_factory) -> Terraform:
    """The terraform CLI with the hashicorp/aws provider from a local plugin directory."""
    exe = shutil.which("terraform")
    if exe is None:
        pytest.skip("terraform is not on PATH (these machines ship 1.11.4 in /usr/local/bin)")
    plugin_dir = find_plugin_dir()
    if plugin_dir is None:
        pytest.skip("no local hashicorp/aws provider found (looked in "
                    f"{', '.join(c for c in PLUGIN_DIR_CANDIDATES if c)}); set TF_PLUGIN_DIR")
    home = tmp_path_factory.mktemp("tf-home")
    cli_config = home / "terraformrc"
    cli_config.write_text("# empty: providers come from -plugin-dir only\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_", "AWS_")) and k != "CHECKPOINT_DISABLE"}
    env.update(TF_CLI_CONFIG_FILE=str(cli_config), TF_IN_AUTOMATION="1", TF_INPUT="0",
               CHECKPOINT_DISABLE="1", HOME=str(home))
    return Terraform(exe, plugin_dir, env)


@pytest.fixture
def terraform_copy(tmp_path) -> Path:
    """A scratch copy of terraform/ (module sources resolve as in the repository)."""
    dst = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, dst, ignore=shutil.ignore_patterns(
        ".terraform", ".terraform.lock.hcl", "*.tfstate*", "*_override.tf"))
    return dst


@pytest.fixture(scope="module")
def moto_aws():
    """A private moto server on a free port on 127.0.0.1 with AWS managed IAM policies loaded
    (the example env attaches AmazonSSMManagedInstanceCore and AmazonRDSEnhancedMonitoringRole).
    Yields its endpoint URL. Like ``tests/conftest.py::moto_endpoint``, but private to this
    module because the managed-policy switch must be set before the server starts."""
    with moto_server(MOTO_IAM_LOAD_MANAGED_POLICIES="true") as endpoint:
        yield endpoint
