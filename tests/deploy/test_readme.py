"""deploy/README.md stays true to the files it names: every `terraform output NAME` exists in
the example env, every repository path it mentions exists, and its module table lists every
module under terraform/modules."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import DEPLOY, ROOT

README = (DEPLOY / "README.md").read_text()


def test_terraform_outputs_named_in_the_readme_exist():
    pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")
    from tests.terraform import hcl

    outputs = set(hcl.parse_module(ROOT / "terraform/envs/example").outputs)
    named = set(re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", README))
    assert named, "the README shows no terraform output"
    assert named <= outputs, sorted(named - outputs)


def test_paths_named_in_the_readme_exist():
    paths = set(re.findall(r"`((?:deploy|terraform|docs)/[\w./-]+)`", README))
    paths |= set(re.findall(r"-f (deploy/[\w.-]+)", README))
    assert len(paths) > 10
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists() and "<" not in p)
    assert not missing, missing


def test_module_table_lists_every_module():
    listed = set(re.findall(r"^\| `(\w+)` \|", README, flags=re.MULTILINE))
    modules = {p.name for p in (ROOT / "terraform/modules").iterdir() if p.is_dir()}
    assert modules <= listed, sorted(modules - listed)
