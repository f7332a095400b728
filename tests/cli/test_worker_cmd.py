"""``pelletseg worker``: the celery command and environment it execs, and its checks."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import main
from core.settings import Settings
from worker.local import worker_command


def test_worker_command_pools_threads_beat_and_secrets(tmp_path):
    settings = Settings(home=tmp_path, webhook_secret="s3cret", torch_threads=0)
    argv, env = worker_command(settings, ["rows"], "w1@host")
    assert argv[argv.index("-Q") + 1] == "rows" and argv[argv.index("--pool") + 1] == "solo"
    assert "--beat" not in argv and argv[argv.index("-n") + 1] == "w1@host"
    assert env["PELLETSEG_HOME"] == str(tmp_path)
    assert env["PELLETSEG_DATABASE_URL"] == settings.resolved_database_url
    assert env["PELLETSEG_WEBHOOK_SECRET"] == "s3cret"  # the secret itself, not "*****"
    argv, env = worker_command(settings, ["plan", "reduce"], "w2@host", processes=3, beat=True)
    assert argv[argv.index("--pool") + 1] == "prefork" and argv[argv.index("-c") + 1] == "3"
    assert argv[argv.index("--schedule") + 1] == str(tmp_path / "celerybeat-schedule")
    assert int(env["PELLETSEG_TORCH_THREADS"]) >= 1


def test_worker_command_refuses_a_working_directory_with_another_checkout(tmp_path,
                                                                         monkeypatch):
    """Celery imports ``-A worker.tasks`` with the working directory first on sys.path: from
    inside another checkout the workers would run its code, not the code that started them."""
    import pytest

    from worker.local import CODE_ROOT, ForeignCheckout

    settings = Settings(home=tmp_path / "home", torch_threads=1)
    other = tmp_path / "other-checkout"
    (other / "worker").mkdir(parents=True)
    (other / "worker" / "tasks.py").write_text("raise SystemExit('the wrong code')\n")
    monkeypatch.chdir(other)
    with pytest.raises(ForeignCheckout, match="another pelletseg checkout") as e:
        worker_command(settings, ["rows"], "w@host")
    assert str(other) in str(e.value) and str(CODE_ROOT) in str(e.value)
    monkeypatch.chdir(CODE_ROOT)  # this checkout itself: fine
    argv, _ = worker_command(settings, ["rows"], "w@host")
    assert argv[argv.index("-A") + 1] == "worker.tasks"
    monkeypatch.chdir(tmp_path)  # no checkout at all: fine
    assert worker_command(settings, ["rows"], "w@host")[0] == argv


def test_worker_command_prefixes_queues_and_runs_rows_in_flight_on_threads(tmp_path):
    settings = Settings(home=tmp_path, queue_prefix="lab2-", rows_in_flight=3, torch_threads=0)
    argv, env = worker_command(settings, ["rows"], "w@host", cpu_share=64)
    assert argv[argv.index("-Q") + 1] == "lab2-rows"
    assert argv[argv.index("--pool") + 1] == "threads" and argv[argv.index("-c") + 1] == "3"
    assert env["PELLETSEG_TORCH_THREADS"] == "1"  # the cores split between 64 processes


def test_worker_refuses_unknown_queues(tmp_path):
    res = CliRunner().invoke(main, ["worker", "--queues", "rows,gpu", "--home", str(tmp_path)])
    assert res.exit_code == 2 and "unknown queue(s) gpu" in res.output


def test_solo_pool_passes_its_concurrency(tmp_path):
    settings = Settings(home=tmp_path, rows_in_flight=1, torch_threads=0)
    argv, _ = worker_command(settings, ["rows"], "w@host")
    assert argv[argv.index("--pool") + 1] == "solo" and argv[argv.index("-c") + 1] == "1"


def test_worker_banner_states_the_concurrency_that_runs(tmp_path, monkeypatch):
    execs = []
    monkeypatch.setattr("cli.worker.os.execve", lambda path, argv, env: execs.append(argv))
    monkeypatch.setenv("PELLETSEG_ROWS_IN_FLIGHT", "3")
    res = CliRunner().invoke(main, ["worker", "--queues", "rows", "--home", str(tmp_path)])
    assert res.exit_code == 0, res.output
    argv = execs[0]
    assert argv[argv.index("--pool") + 1] == "threads" and argv[argv.index("-c") + 1] == "3"
    assert "queues rows, concurrency 3 (threads pool)" in res.output
