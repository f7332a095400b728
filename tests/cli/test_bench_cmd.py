"""``pelletseg bench``'s options reach the benchmark's configuration (the run itself is
tests/benchmarks/test_harness.py's)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli.main import main


def _capture_run(monkeypatch) -> dict:
    """Replace the benchmark run and report writer; returns where the run's config lands."""
    import benchmarks.report
    import benchmarks.runner

    seen = {}

    def fake_run(cfg, say):
        seen["cfg"] = cfg
        return {}

    def fake_write(doc, path):
        path.with_suffix(".md").write_text("report\n")
        return path.with_suffix(".md")

    monkeypatch.setattr(benchmarks.runner, "run", fake_run)
    monkeypatch.setattr(benchmarks.report, "write", fake_write)
    return seen


@pytest.mark.parametrize(("args", "expected"), [([], 0), (["--queued-jobs", "3"], 3)])
def test_bench_queued_jobs_reach_the_config(tmp_path, monkeypatch, args, expected):
    seen = _capture_run(monkeypatch)
    res = CliRunner().invoke(main, ["bench", "--quick", "--json", str(tmp_path / "b.json"), *args])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].queued_jobs == expected
    bad = CliRunner().invoke(main, ["bench", "--json", str(tmp_path / "b.json"),
                                    "--queued-jobs", "-1"])
    assert bad.exit_code == 2 and "--queued-jobs" in bad.output


@pytest.mark.parametrize(("args", "env", "expected"), [
    ([], {}, "bf16"),  # a package validated for bfloat16 is measured as a worker serves it
    (["--precision", "fp32"], {}, "fp32"),
    ([], {"PELLETSEG_PRECISION": "fp32"}, "fp32"),  # as a worker with it would compute
])
def test_bench_precision_follows_the_option_or_the_workers_setting(tmp_path, monkeypatch,
                                                                   args, env, expected):
    monkeypatch.delenv("PELLETSEG_PRECISION", raising=False)
    seen = _capture_run(monkeypatch)
    res = CliRunner().invoke(main, ["bench", "--quick", "--json", str(tmp_path / "b.json"),
                                    *args], env=env)
    assert res.exit_code == 0, res.output
    assert seen["cfg"].precision == expected and seen["cfg"].device == "cpu"


@pytest.mark.parametrize(("args", "device", "expected"), [
    ([], "cpu", 1), ([], "cuda", 3), (["--rows-in-flight", "6"], "cuda", 6),
])
def test_bench_rows_in_flight_reach_the_config(tmp_path, monkeypatch, args, device, expected):
    """``--rows-in-flight``: how many rows a worker overlaps (the GPU check tunes it)."""
    seen = _capture_run(monkeypatch)
    res = CliRunner().invoke(main, ["bench", "--quick", "--device", device,
                                    "--json", str(tmp_path / "b.json"), *args])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].resolved().rows_in_flight == expected
    bad = CliRunner().invoke(main, ["bench", "--json", str(tmp_path / "b.json"),
                                    "--rows-in-flight", "0"])
    assert bad.exit_code == 2 and "--rows-in-flight" in bad.output


@pytest.mark.parametrize("command", ["bench", "agreement"])
def test_a_model_that_is_not_a_package_is_a_clear_error(tmp_path, command):
    res = CliRunner().invoke(main, [command, "--json", str(tmp_path / "b.json"), "--model",
                                    str(tmp_path), "--work", str(tmp_path / "w")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)  # no traceback
    assert f"--model {tmp_path}: {tmp_path}/model.json does not exist" in res.output
    assert "give ebc-unet-mnv2, unet-resnet34 or a model package folder" in res.output
    assert not (tmp_path / "b.json").exists()
