"""`terraform fmt -check` over terraform/, and `terraform init -backend=false` (local plugin
directory, offline) + `terraform validate` of every environment under terraform/envs/."""

from __future__ import annotations

import json

import pytest

from tests.terraform.hcl import ENVS, TERRAFORM, env_dirs


def test_fmt_check_is_clean(terraform):
    """Every .tf file is in canonical format (terraform fmt would change nothing)."""
    proc = terraform("fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM),
                     cwd=TERRAFORM, check=False)
    assert proc.returncode == 0, f"terraform fmt would change:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("env", [p.name for p in env_dirs()])
def test_env_validates(terraform, terraform_copy, env):
    """The environment initialises offline from the plugin directory and validates, with no
    warnings (deprecated arguments show up as warnings)."""
    work = terraform_copy / "envs" / env
    terraform.init(work, "-backend=false")
    proc = terraform("validate", "-json", "-no-color", cwd=work, check=False)
    result = json.loads(proc.stdout)
    problems = [f"{d['severity']}: {d['summary']}: {d.get('detail', '')}"
                for d in result["diagnostics"]]
    assert result["valid"], "\n".join(problems)
    assert result["warning_count"] == 0, "\n".join(problems)


def test_envs_exist():
    """terraform/envs/ holds at least the example environment."""
    assert (ENVS / "example" / "main.tf").is_file()
