"""``pelletseg --version`` and a top-level help whose descriptions are whole."""

from __future__ import annotations

import importlib.metadata
import re

from click.testing import CliRunner

from cli.help import SHORT_HELP
from cli.main import main


def test_version_comes_from_the_package_metadata():
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"pelletseg {importlib.metadata.version('pelletseg')}"


def test_every_command_has_a_whole_one_line_description():
    # a command added later without a line in cli/help.py still fails below if click cuts it
    assert set(SHORT_HELP) <= set(main.commands), set(SHORT_HELP) - set(main.commands)
    res = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert res.exit_code == 0
    commands = res.output.split("Commands:")[1]
    assert "..." not in commands
    flat = re.sub(r"\s+", " ", res.output)
    for name, line in SHORT_HELP.items():
        assert f"{name} {line}" in flat, name
        assert "\n" not in line and line.endswith(".")
