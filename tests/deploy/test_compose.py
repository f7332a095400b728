"""deploy/compose.yaml: parses, builds the two images from deploy/, wires migrations before
the API and workers, and gives every pelletseg container only settings that Settings reads,
with values that Settings accepts."""

from __future__ import annotations

import re

import pytest
import yaml

from queues.names import QUEUES
from tests.deploy.conftest import (
    DEPLOY,
    NON_SETTING_ENV,
    ROOT,
    ShellRefused,
    assert_pool_fits_rows_in_flight,
    assert_pool_fits_stream_reduce,
    celery_pool,
    settings_from_env,
    worker_argv,
)

PELLETSEG_SERVICES = {"migrate", "api", "worker-cpu", "worker-rows", "scheduler"}

#: worker-cpu's celery command before the streaming stitcher: what it must still run when
#: PELLETSEG_STREAM_REDUCE is off.
CPU_WORKER_SOLO = ["celery", "-A", "worker.tasks", "worker", "-Q", "plan,reduce", "--pool", "solo",
                   "--concurrency", "1", "--prefetch-multiplier", "1", "-n", "cpu@%h",
                   "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel",
                   "INFO"]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def substituted(value: str, dotenv: dict[str, str] | None = None) -> str:
    """Compose's ${VAR} / ${VAR:?msg} / ${VAR:-default} interpolation: VAR's value in
    ``dotenv`` (deploy/.env or the shell) if set, else the default after ``:-``, else a
    stand-in value; ``$$`` is a literal ``$`` (for the shell of a command)."""
    dotenv = dotenv or {}

    def value_of(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op = m.group(1), m.group(2) or ""
        if dotenv.get(name):
            return dotenv[name]
        return op[2:] if op.startswith(":-") else f"x{name.lower()}"

    return re.sub(r"\$\$|\$\{(\w+)(:[-?][^}]*)?\}", value_of, str(value))


def service_env(svc: dict, dotenv: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a pelletseg service, interpolated as compose would."""
    return {k: substituted(v, dotenv) for k, v in svc["environment"].items()}


def service_settings(svc: dict, dotenv: dict[str, str] | None = None):
    """(celery argv, Settings) of a pelletseg service, interpolated as compose would; a shell
    form command is run (``worker_argv``) with the service's environment."""
    env = service_env(svc, dotenv)
    command = worker_argv([substituted(a, dotenv) for a in svc["command"]], env)
    return command, settings_from_env(env)


def test_full_stack_services(compose):
    services = compose["services"]
    assert {"postgres", "redis"} | PELLETSEG_SERVICES <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16.")
    assert services["redis"]["image"].startswith("redis:7.")
    for name, svc in services.items():
        tag = svc["image"].rpartition(":")[2]
        assert tag and tag != "latest", f"{name} uses an unpinned image"


def test_pelletseg_services_use_the_deploy_images(compose):
    for name in PELLETSEG_SERVICES:
        svc = compose["services"][name]
        build = svc["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve().is_file()
        # the API's slim image; the rows' CUDA image; the CPU workers' (plan, reduce, beat)
        image = ("api" if name in ("api", "migrate") else
                 "worker-cpu" if name in ("worker-cpu", "scheduler") else "worker")
        assert build["dockerfile"] == f"deploy/Dockerfile.{image}"
        assert svc["image"] == f"pelletseg-{image}:local"
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]


def test_environment_is_settings_and_parses(compose, setting_names):
    for name in PELLETSEG_SERVICES:
        env = {k: substituted(v) for k, v in compose["services"][name]["environment"].items()}
        ours = {k for k in env if k.startswith("PELLETSEG_")}
        assert ours <= setting_names and set(env) - ours <= NON_SETTING_ENV, \
            f"{name}: {sorted(set(env) - setting_names)}"
        s = settings_from_env(env)
        assert s.resolved_database_url.startswith("postgresql+psycopg://pelletseg:")
        assert s.resolved_broker_url == "redis://redis:6379/0"
        assert s.resolved_storage_url == "file:///data/store"
        assert s.webhook_secret is not None
    api = settings_from_env({k: substituted(v) for k, v in compose["services"]["api"]["environment"].items()})
    assert api.api_host == "0.0.0.0" and api.api_auth is True


def test_other_services_set_no_pelletseg_names(compose, setting_names):
    for name, svc in compose["services"].items():
        if name in PELLETSEG_SERVICES:
            continue
        env = svc.get("environment") or {}
        stray = {k for k in env if k.startswith("PELLETSEG_")} - setting_names
        assert not stray, f"{name}: {stray}"


def test_commands_and_ordering(compose):
    s = compose["services"]
    assert s["migrate"]["command"] == ["pelletseg", "migrate"]
    assert s["api"]["command"][:4] == ["pelletseg", "serve", "--host", "0.0.0.0"]
    assert s["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert s["api"]["ports"] == ["127.0.0.1:8000:8000"]
    consumed = []
    for name in ("worker-cpu", "worker-rows"):
        cmd, _ = service_settings(s[name])
        assert cmd[:4] == ["celery", "-A", "worker.tasks", "worker"]
        assert cmd[cmd.index("--prefetch-multiplier") + 1] == "1"
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        consumed += cmd[cmd.index("-Q") + 1].split(",")
    assert sorted(consumed) == sorted(QUEUES), "every queue has exactly one worker service"
    assert s["scheduler"]["command"][:4] == ["celery", "-A", "worker.tasks", "beat"]
    assert (ROOT / "worker" / "tasks.py").is_file()


def test_rows_worker_runs_rows_in_flight_on_a_threads_pool(compose):
    """worker-rows runs a threads pool of PELLETSEG_ROWS_IN_FLIGHT rows (2 unless deploy/.env
    says otherwise), and one variable sets both; worker-cpu stays one task at a time."""
    svc = compose["services"]["worker-rows"]
    for dotenv, n in (({}, 2), ({"PELLETSEG_ROWS_IN_FLIGHT": "3"}, 3),
                      ({"PELLETSEG_ROWS_IN_FLIGHT": "1"}, 1)):
        command, settings = service_settings(svc, dotenv)
        assert celery_pool(command) == ("threads", str(n)), dotenv
        assert settings.rows_in_flight == n, dotenv
        assert_pool_fits_rows_in_flight(command, settings, f"worker-rows {dotenv}")
    cpu_command, cpu = service_settings(compose["services"]["worker-cpu"])
    assert celery_pool(cpu_command) == ("solo", "1")
    assert_pool_fits_rows_in_flight(cpu_command, cpu, "worker-cpu")


@pytest.mark.parametrize(("dotenv", "stream", "pool"), [
    ({}, False, ("solo", "1")),
    ({"PELLETSEG_STREAM_REDUCE": "false", "REDUCE_CONCURRENCY": "8"}, False, ("solo", "1")),
    ({"PELLETSEG_STREAM_REDUCE": "true"}, True, ("threads", "4")),
    ({"PELLETSEG_STREAM_REDUCE": "true", "REDUCE_CONCURRENCY": "8"}, True, ("threads", "8")),
], ids=["default", "off", "on", "on-8"])
def test_cpu_worker_pool_follows_stream_reduce(compose, dotenv, stream, pool):
    """One switch in deploy/.env: off (the default), worker-cpu runs exactly the solo command
    of before; on, PELLETSEG_STREAM_REDUCE reaches its Settings and the celery it starts runs a
    threads pool of REDUCE_CONCURRENCY (default 4) on the same queues."""
    svc = compose["services"]["worker-cpu"]
    command, settings = service_settings(svc, dotenv)
    assert settings.stream_reduce is stream
    assert celery_pool(command) == pool
    concurrency = int(service_env(svc, dotenv)["REDUCE_CONCURRENCY"])
    assert_pool_fits_stream_reduce(command, settings, concurrency, f"worker-cpu {dotenv}")
    if not stream:
        assert command == CPU_WORKER_SOLO
    else:
        solo = CPU_WORKER_SOLO.index("--pool")
        assert command == [*CPU_WORKER_SOLO[:solo], "--pool", "threads", "--concurrency", pool[1],
                           *CPU_WORKER_SOLO[solo + 4:]]
    # The rows worker is not affected by the switch.
    assert celery_pool(service_settings(compose["services"]["worker-rows"], dotenv)[0]) == \
        ("threads", "2")


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "t", "yes", "Y", "on", "1", "false",
                                   "False", "f", "NO", "n", "off", "0", "", "2", " true", "enable"])
def test_cpu_worker_shell_reads_stream_reduce_as_settings_do(compose, value):
    """The shell decides on the same spellings as pydantic: a value Settings reads as true gets
    the threads pool, false the solo pool, and one Settings refuses stops the container."""
    svc = compose["services"]["worker-cpu"]
    env = service_env(svc) | {"PELLETSEG_STREAM_REDUCE": value}
    argv = [substituted(a) for a in svc["command"]]
    try:
        stream = settings_from_env(env).stream_reduce
    except ValueError:  # pydantic's ValidationError
        with pytest.raises(ShellRefused, match="is not a boolean"):
            worker_argv(argv, env)
        return
    assert celery_pool(worker_argv(argv, env)) == (("threads", "4") if stream else ("solo", "1"))


@pytest.mark.parametrize("value", ["1", "33", "0", "x", "", "4.5"])
def test_cpu_worker_refuses_a_reduce_concurrency_outside_two_to_thirty_two(compose, value):
    svc = compose["services"]["worker-cpu"]
    dotenv = {"PELLETSEG_STREAM_REDUCE": "true"}
    env = service_env(svc, dotenv) | {"REDUCE_CONCURRENCY": value}
    with pytest.raises(ShellRefused, match="want 2 to 32"):
        worker_argv([substituted(a, dotenv) for a in svc["command"]], env)
    # Off, the value is not used.
    env["PELLETSEG_STREAM_REDUCE"] = "false"
    assert celery_pool(worker_argv([substituted(a) for a in svc["command"]], env)) == ("solo", "1")


def test_workers_and_api_share_the_store(compose):
    for name in ("api", "worker-cpu", "worker-rows"):
        assert "store:/data/store" in compose["services"][name]["volumes"]


def test_gpu_override_reserves_a_gpu_for_rows_workers():
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())
    svc = gpu["services"]["worker-rows"]
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert svc["environment"]["PELLETSEG_DEVICE"] == "cuda"
    # The override changes neither half of rows in flight alone (compose.yaml sets both).
    assert "command" not in svc and "PELLETSEG_ROWS_IN_FLIGHT" not in svc["environment"]


def test_monitoring_profile_mounts_the_shipped_configs(compose):
    prom = compose["services"]["prometheus"]
    graf = compose["services"]["grafana"]
    assert prom["profiles"] == graf["profiles"] == ["monitoring"]
    for svc in (prom, graf):
        for vol in svc["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), src
