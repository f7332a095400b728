"""deploy/k8s: manifests parse, kustomize renders them, deployments run the deploy images
with only Settings variables, rows workers request a GPU, and KEDA scales the rows workers on
the rows queue (its Redis list name derived from storage/queues.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from storage.queues import queue_name
from tests.deploy.conftest import K8S, NON_SETTING_ENV, settings_from_env


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
            want = "api" if c["command"][0] == "pelletseg" else "worker"
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
    for name, spec in pod_specs(docs):
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
    cpu = deps["pelletseg-worker-cpu"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cpu[cpu.index("-Q") + 1] == ",".join(queue_name(settings, q) for q in ("plan", "reduce"))
    assert deps["pelletseg-scheduler"]["spec"]["replicas"] == 1
    assert deps["pelletseg-scheduler"]["spec"]["strategy"]["type"] == "Recreate"


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
