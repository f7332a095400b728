"""Every dashboard script parses as an ES module (``node --check``), so a syntax slip (e.g. in a
merge) is caught without a browser; skipped where Node.js is absent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[2] / "api" / "static" / "js").glob("*.js"))
NODE = shutil.which("node")


def test_there_are_scripts():
    assert len(SCRIPTS) >= 5


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_as_a_module(script):
    done = subprocess.run([NODE, "--check", "--input-type=module"], input=script.read_bytes(),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
