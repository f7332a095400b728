"""checkov over terraform/ and deploy/ (Terraform, Dockerfiles, Kubernetes, secrets): zero
failed checks, and every suppression is an inline skip that says why.

checkov pins an old boto3, so it lives in its own virtual environment (.venv-checkov, made by
.ci/run); the test skips with a reason where neither that nor a checkov on PATH exists."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.deploy.conftest import ROOT, linter


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    exe = linter("checkov")
    if exe is None:
        pytest.skip("checkov is not installed: python3 -m venv .venv-checkov && "
                    ".venv-checkov/bin/pip install checkov (see .ci/run)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false",
               HOME=str(tmp_path_factory.mktemp("checkov-home")))
    proc = subprocess.run(
        [exe, "-d", "terraform", "-d", "deploy", "--skip-download",
         "--framework", "terraform", "dockerfile", "kubernetes", "secrets", "-o", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    # One JSON document per directory, each a report or a list of reports.
    decoder, pos, out = json.JSONDecoder(), 0, []
    text = proc.stdout
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        doc, pos = decoder.raw_decode(text, pos)
        out += doc if isinstance(doc, list) else [doc]
    return out


def test_checkov_finds_no_failed_check(reports):
    frameworks = {r["check_type"] for r in reports}
    assert {"terraform", "dockerfile", "kubernetes"} <= frameworks
    assert sum(r["summary"]["passed"] for r in reports) > 500
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})"
              for r in reports for c in r["results"].get("failed_checks", [])]
    assert not failed, "\n".join(failed)


def test_every_suppression_says_why(reports):
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    assert skipped, "expected the documented inline skips"
    for c in skipped:
        reason = (c.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) > 30, f"{c['check_id']} on {c['resource']}: reason {reason!r}"
