"""``pelletseg train`` and ``evaluate`` pick their device as jobs do: ``auto`` by default
(CUDA if available, else CPU), ``PELLETSEG_DEVICE`` honoured."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cli.main import main
from cli.options import device_option


@device_option
@click.command()
def show(device):
    click.echo(device)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_default_to_auto(command):
    param = next(p for p in main.commands[command].params if p.name == "device")
    assert param.default == "auto" and param.envvar == "PELLETSEG_DEVICE"
    assert param.callback is device_option(click.command()(lambda device: None)).params[0].callback


def test_auto_is_resolved_like_jobs(monkeypatch):
    import torch

    monkeypatch.delenv("PELLETSEG_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert CliRunner().invoke(show, []).output.strip() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert CliRunner().invoke(show, []).output.strip() == "cuda"
    assert CliRunner().invoke(show, ["--device", "cpu"]).output.strip() == "cpu"
    monkeypatch.setenv("PELLETSEG_DEVICE", "cuda:1")
    assert CliRunner().invoke(show, []).output.strip() == "cuda:1"


def test_a_bad_device_is_refused():
    res = CliRunner().invoke(show, ["--device", "gpu"])
    assert res.exit_code == 2 and "'gpu' is not a torch device" in res.output
