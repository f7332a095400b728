"""deploy/compose.yaml: parses, builds the two images from deploy/, wires migrations before
the API and workers, and gives every pelletseg container only settings that Settings reads,
with values that Settings accepts."""

from __future__ import annotations

import re

import pytest
import yaml

from storage.queues import QUEUES
from tests.deploy.conftest import DEPLOY, ROOT, settings_from_env

PELLETSEG_SERVICES = {"migrate", "api", "worker-cpu", "worker-rows", "scheduler"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def substituted(value: str) -> str:
    """Compose's ${VAR:?msg} / ${VAR:-default} interpolation with a stand-in value."""
    return re.sub(r"\$\{(\w+)(:[-?][^}]*)?\}", lambda m: f"x{m.group(1).lower()}", str(value))


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
        expected = "Dockerfile.api" if name in ("api", "migrate") else "Dockerfile.worker"
        assert build["dockerfile"] == f"deploy/{expected}"
        assert svc["image"] == ("pelletseg-api:local" if expected.endswith("api") else "pelletseg-worker:local")
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]


def test_environment_is_settings_and_parses(compose, setting_names):
    for name in PELLETSEG_SERVICES:
        env = {k: substituted(v) for k, v in compose["services"][name]["environment"].items()}
        assert set(env) <= setting_names, f"{name}: {sorted(set(env) - setting_names)}"
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
        cmd = s[name]["command"]
        assert cmd[:4] == ["celery", "-A", "worker.tasks", "worker"]
        assert cmd[cmd.index("--prefetch-multiplier") + 1] == "1"
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        consumed += cmd[cmd.index("-Q") + 1].split(",")
    assert sorted(consumed) == sorted(QUEUES), "every queue has exactly one worker service"
    assert s["scheduler"]["command"][:4] == ["celery", "-A", "worker.tasks", "beat"]
    assert (ROOT / "worker" / "tasks.py").is_file()


def test_workers_and_api_share_the_store(compose):
    for name in ("api", "worker-cpu", "worker-rows"):
        assert "store:/data/store" in compose["services"][name]["volumes"]


def test_gpu_override_reserves_a_gpu_for_rows_workers():
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())
    svc = gpu["services"]["worker-rows"]
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert svc["environment"]["PELLETSEG_DEVICE"] == "cuda"


def test_monitoring_profile_mounts_the_shipped_configs(compose):
    prom = compose["services"]["prometheus"]
    graf = compose["services"]["grafana"]
    assert prom["profiles"] == graf["profiles"] == ["monitoring"]
    for svc in (prom, graf):
        for vol in svc["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), src
