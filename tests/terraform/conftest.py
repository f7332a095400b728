"""Fixtures for the Terraform checks: the terraform binary, the local AWS provider plugin
directory, a scratch copy of terraform/ (the repository stays clean: no .terraform folders
or lock files are written into it), and a private moto server that stands in for AWS."""

from __future__ import annotations

import json
import os
import re
import shlex
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


def user_data_env_file(script: str) -> dict[str, str]:
    """KEY=value lines of the env file a GPU worker's boot script writes (its quoted ENVEOF
    heredoc; the secrets it appends at boot are not in it)."""
    (body,) = re.findall(r"<<'ENVEOF'\n(.*?)\nENVEOF\n", script, re.DOTALL)
    return dict(line.split("=", 1) for line in body.splitlines())


def user_data_worker_argv(script: str) -> list[str]:
    """The ``celery worker ...`` command of the boot script's per-GPU ``docker run``."""
    joined = script.replace("\\\n", " ")
    (run,) = [line for line in joined.splitlines() if line.strip().startswith("docker run")]
    argv = shlex.split(run)
    return argv[argv.index("celery"):]


def offline_provider(region: str, extra: str = "") -> str:
    """An ``aws`` provider block with fake credentials that checks nothing with AWS (for
    offline plans and the moto apply); ``extra`` lines go inside the block."""
    return f'''provider "aws" {{
  region                      = "{region}"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
{extra}}}
'''


def offline_module(terraform: Terraform, folder: Path, module: str, variables: dict) -> Path:
    """An initialised scratch copy of ``terraform/modules/{module}`` in ``folder`` with
    ``variables`` and a provider that makes no call (the repository gets no .terraform)."""
    from tests.terraform.hcl import MODULES

    work = folder / module
    shutil.copytree(MODULES / module, work, ignore=shutil.ignore_patterns(
        ".terraform", ".terraform.lock.hcl", "*.tfstate*", "*_override.tf"))
    (work / "test_provider.tf").write_text(offline_provider("eu-west-1"))
    (work / "test.auto.tfvars.json").write_text(json.dumps(variables))
    terraform.init(work, "-backend=false")
    return work


def planned_resources(terraform: Terraform, work: Path, *extra: str) -> dict[str, dict]:
    """``after`` of every resource `terraform plan` would create in ``work``, by address."""
    terraform("plan", "-input=false", "-no-color", "-lock=false", "-out=test.tfplan", *extra,
              cwd=work, timeout=180)
    plan = json.loads(terraform("show", "-json", "test.tfplan", cwd=work).stdout)
    return {r["address"]: r["change"]["after"] for r in plan["resource_changes"]}
