"""deploy/k8s: manifests parse, kustomize renders them, deployments run the deploy images
with only Settings variables, rows workers request a GPU, and KEDA scales the rows workers on
the rows queue (its Redis list name derived from queues/app.py)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from queues.names import queue_name
from tests.deploy.conftest import (
    DEPLOY,
    K8S,
    NON_SETTING_ENV,
    assert_pool_fits_rows_in_flight,
    assert_pool_fits_stream_reduce,
    celery_pool,
    settings_from_env,
    worker_argv,
)


@pytest.fixture(scope="module")
def docs():
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def of_kind(docs, kind):
    return {d["metadata"]["name"]: d for _, d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def config(docs):
    return of_kind(docs, "ConfigMap")["pelletseg-config"]["data"]


def pod_specs(docs):
    for kind in ("Deployment", "Job"):
        for name, d in of_kind(docs, kind).items():
            yield name, d["spec"]["template"]["spec"]


def container_env(container: dict, config: dict) -> dict[str, str]:
    """The literal environment of a container: the ConfigMap, then its own ``env`` values
    (secret and field references left out)."""
    env = dict(config)
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def expanded(argv: list[str], env: dict[str, str]) -> list[str]:
    """``command`` as the kubelet runs it: ``$(NAME)`` replaced by the container's variable
    NAME (left as written when the variable is not a literal here, e.g. POD_NAME), ``$$`` by
    ``$``."""
    def value_of(m: re.Match) -> str:
        return "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0))

    return [re.sub(r"\$\$|\$\((\w+)\)", value_of, a) for a in argv]


def run_argv(container: dict, env: dict[str, str]) -> list[str]:
    """The celery argv a worker container starts with ``env`` (its literal environment, plus
    a stand-in pod name): the command expanded by the kubelet, a shell form run."""
    env = {"POD_NAME": "pelletseg-worker-0", **env}
    return worker_argv(expanded(container["command"], env), env)


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    assert kust["namespace"] == "pelletseg"


def test_kustomize_renders(docs):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (only needed to render the kustomization)")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(rendered) == len(docs)
    assert all(d["metadata"].get("namespace", "pelletseg") == "pelletseg" for d in rendered)


def test_images_are_the_deploy_images_with_fixed_tags(docs):
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    declared = {i["name"] for i in kust["images"]}
    for name, spec in pod_specs(docs):
        for c in spec["containers"]:
            repo, _, tag = c["image"].rpartition(":")
            assert repo in declared and tag and tag != "latest", (name, c["image"])
            # the API's image; the CPU workers' (plan, reduce, beat: no torch); the rows'
            want = ("api" if c["command"][0] == "pelletseg" else
                    "worker-cpu" if name in ("pelletseg-worker-cpu", "pelletseg-scheduler")
                    else "worker")
            assert repo.endswith(f"/{want}"), (name, c["image"])


def test_environment_is_only_settings(docs, config, setting_names):
    assert set(config) <= setting_names, sorted(set(config) - setting_names)
    settings_from_env(config)  # every value parses as its Setting
    for name, spec in pod_specs(docs):
        for c in spec["containers"]:
            assert c["envFrom"] == [{"configMapRef": {"name": "pelletseg-config"}}]
            names = {e["name"] for e in c.get("env", [])}
            stray = {n for n in names if not n.startswith("PELLETSEG_")} - NON_SETTING_ENV
            assert not stray, (name, stray)
            assert {n for n in names if n.startswith("PELLETSEG_")} <= setting_names, name
            secret = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
            assert {"PELLETSEG_DATABASE_URL", "PELLETSEG_BROKER_URL"} <= secret


def test_pods_are_hardened(docs):
    for _name, spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["limits"] and c["resources"]["requests"]


def test_api_and_migration(docs):
    api = of_kind(docs, "Deployment")["pelletseg-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["command"][:4] == ["pelletseg", "serve", "--host", "0.0.0.0"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    job = of_kind(docs, "Job")["pelletseg-migrate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["pelletseg", "migrate"]


def test_rows_workers_request_a_gpu_and_consume_rows(docs, config):
    settings = settings_from_env(config)
    deps = of_kind(docs, "Deployment")
    rows = deps["pelletseg-worker-rows"]["spec"]["template"]["spec"]
    (c,) = rows["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["command"][:4] == ["celery", "-A", "worker.tasks", "worker"]
    assert c["command"][c["command"].index("-Q") + 1] == queue_name(settings, "rows")
    assert c["command"][c["command"].index("--prefetch-multiplier") + 1] == "1"
    assert {"name": "PELLETSEG_DEVICE", "value": "cuda"} in c["env"]
    assert any(t["key"] == "nvidia.com/gpu" for t in rows["tolerations"])
    (cpu_container,) = deps["pelletseg-worker-cpu"]["spec"]["template"]["spec"]["containers"]
    cpu = run_argv(cpu_container, container_env(cpu_container, config))
    assert cpu[:4] == ["celery", "-A", "worker.tasks", "worker"]
    assert cpu[cpu.index("-Q") + 1] == ",".join(queue_name(settings, q) for q in ("plan", "reduce"))
    assert deps["pelletseg-scheduler"]["spec"]["replicas"] == 1
    assert deps["pelletseg-scheduler"]["spec"]["strategy"]["type"] == "Recreate"


def test_workers_run_rows_in_flight_as_their_environment_says(docs, config):
    """The rows workers run a threads pool of PELLETSEG_ROWS_IN_FLIGHT rows (2), the pool's
    --concurrency taken from that one env value; the CPU workers one task at a time."""
    deps = of_kind(docs, "Deployment")
    pools = {}
    for name in ("pelletseg-worker-rows", "pelletseg-worker-cpu"):
        (c,) = deps[name]["spec"]["template"]["spec"]["containers"]
        env = container_env(c, config)
        command = run_argv(c, env)
        assert_pool_fits_rows_in_flight(command, settings_from_env(env), name)
        pools[name] = celery_pool(command)
    assert pools == {"pelletseg-worker-rows": ("threads", "2"),
                     "pelletseg-worker-cpu": ("solo", "1")}
    # One knob: the command refers to the variable instead of repeating its value.
    (rows,) = deps["pelletseg-worker-rows"]["spec"]["template"]["spec"]["containers"]
    assert celery_pool(rows["command"])[1] == "$(PELLETSEG_ROWS_IN_FLIGHT)"
    assert "PELLETSEG_ROWS_IN_FLIGHT" not in config  # shared with the CPU workers


#: The CPU workers' celery command before the streaming stitcher, as the kubelet and shell
#: start it: what they must still run when PELLETSEG_STREAM_REDUCE is off.
CPU_WORKER_SOLO = ["celery", "-A", "worker.tasks", "worker", "-Q", "plan,reduce", "--pool", "solo",
                   "--concurrency", "1", "--prefetch-multiplier", "1", "-n",
                   "cpu@pelletseg-worker-0", "--without-gossip", "--without-mingle",
                   "--without-heartbeat", "--loglevel", "INFO"]


@pytest.mark.parametrize(("patch", "stream", "pool"), [
    ({}, False, ("solo", "1")),
    ({"PELLETSEG_STREAM_REDUCE": "true"}, True, ("threads", "4")),
    ({"PELLETSEG_STREAM_REDUCE": "true", "REDUCE_CONCURRENCY": "12"}, True, ("threads", "12")),
], ids=["default", "on", "on-12"])
def test_cpu_workers_pool_follows_stream_reduce(docs, config, patch, stream, pool):
    """The CPU Deployment's PELLETSEG_STREAM_REDUCE env value ('false' as shipped) is the one
    switch: off, exactly the solo command of before; patched to 'true', the same value reaches
    Settings and a threads pool of its REDUCE_CONCURRENCY (4) runs the same queues."""
    deps = of_kind(docs, "Deployment")
    (c,) = deps["pelletseg-worker-cpu"]["spec"]["template"]["spec"]["containers"]
    declared = {e["name"]: e.get("value") for e in c["env"]}
    assert (declared["PELLETSEG_STREAM_REDUCE"], declared["REDUCE_CONCURRENCY"]) == ("false", "4")
    env = container_env(c, config) | patch
    settings = settings_from_env(env)
    assert settings.stream_reduce is stream
    command = run_argv(c, env)
    assert celery_pool(command) == pool
    assert_pool_fits_stream_reduce(command, settings, int(env["REDUCE_CONCURRENCY"]),
                                   f"pelletseg-worker-cpu {patch}")
    if not stream:
        assert command == CPU_WORKER_SOLO
    # Set on the CPU workers only, beside the pool they size (the planner reads the setting).
    assert "PELLETSEG_STREAM_REDUCE" not in config and "REDUCE_CONCURRENCY" not in config
    for name in ("pelletseg-worker-rows", "pelletseg-api", "pelletseg-scheduler"):
        for container in deps[name]["spec"]["template"]["spec"]["containers"]:
            assert not {"PELLETSEG_STREAM_REDUCE", "REDUCE_CONCURRENCY"} & {
                e["name"] for e in container.get("env", [])}, name


def test_cpu_worker_shell_is_the_compose_one(docs):
    """compose.yaml's worker-cpu and the CPU Deployment run one script (compose's $$ escape
    and node name aside), so the tests of its spellings and bounds in test_compose.py hold
    here too."""
    (c,) = of_kind(docs, "Deployment")["pelletseg-worker-cpu"]["spec"]["template"]["spec"][
        "containers"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    compose_script = compose["services"]["worker-cpu"]["command"][2]
    assert c["command"][:2] == ["sh", "-c"]
    assert c["command"][2] == compose_script.replace("$$", "$").replace(
        "cpu@%h", "cpu@$(POD_NAME)")


def test_keda_scales_rows_workers_on_the_rows_queue(docs, config):
    settings = settings_from_env(config)
    scaled = of_kind(docs, "ScaledObject")
    rows = scaled["pelletseg-worker-rows"]["spec"]
    assert rows["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "pelletseg-worker-rows"}
    assert rows["minReplicaCount"] == 0 and rows["maxReplicaCount"] >= 1
    (trigger,) = rows["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == queue_name(settings, "rows")
    assert int(trigger["metadata"]["listLength"]) >= 1
    cpu = scaled["pelletseg-worker-cpu"]["spec"]
    assert cpu["scaleTargetRef"]["name"] == "pelletseg-worker-cpu"
    assert {t["metadata"]["listName"] for t in cpu["triggers"]} == {
        queue_name(settings, "plan"), queue_name(settings, "reduce")}
    auth = of_kind(docs, "TriggerAuthentication")["pelletseg-redis"]
    refs = {t["authenticationRef"]["name"] for s in scaled.values() for t in s["spec"]["triggers"]}
    assert refs == {auth["metadata"]["name"]}
    # Deployments scaled by KEDA exist.
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} <= set(of_kind(docs, "Deployment"))


def test_checkov_skips_in_manifests_give_reasons(docs):
    for _, d in docs:
        for key, value in (d["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert check.startswith("CKV_K8S_") and len(reason) > 30, value
