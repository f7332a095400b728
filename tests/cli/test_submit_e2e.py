"""``pelletseg submit --wait`` end to end, as a user runs it: ``pelletseg serve`` and
``pelletseg worker`` processes on one embedded home, the image uploaded through the API,
segmented by the worker with the bundled model, results downloaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.cli.test_run import OPTIONAL, OUTPUTS, small_image  # noqa: F401 - fixture
from tests.conftest import free_port
from tests.imaging.formats.test_inputs import write_scenes


def _cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_submit_wait_through_serve_and_a_worker(tmp_path, small_image):  # noqa: F811
    home = tmp_path / "home"
    env = {**os.environ, "PELLETSEG_TILE_SIZE": "256", "PELLETSEG_HALO": "32",
           "PELLETSEG_HOME": str(home)}
    created = _cli("apikey", "create", "e2e", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = open(tmp_path / "processes.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)],
                              env=env, stdout=logs, stderr=subprocess.STDOUT)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
            time.sleep(0.2)
        worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--concurrency", "1"],
                                  env=env, stdout=logs, stderr=subprocess.STDOUT)
        client_env = {**env, "PELLETSEG_API_URL": base, "PELLETSEG_API_KEY": key,
                      "PELLETSEG_HOME": str(tmp_path / "client"),
                      "XDG_CONFIG_HOME": str(tmp_path / "config")}  # submit's upload ledger
        res = _cli("submit", str(small_image), "--label", "sample=S-1", "--wait",
                   env=client_env)
        assert res.returncode == 0, res.stdout + res.stderr + (tmp_path / "processes.log"
                                                              ).read_text(errors="replace")
        assert "Phase fractions" in res.stdout and "oxide" in res.stdout
        job_id = next(line.split()[1] for line in res.stdout.splitlines()
                      if line.startswith("job "))
        out = tmp_path / "out"
        res = _cli("results", job_id, "--out", str(out), env=client_env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert OUTPUTS <= {p.name for p in out.iterdir()} <= OUTPUTS | OPTIONAL
        doc = json.loads((out / "fractions.json").read_text())
        assert (doc["width"], doc["height"]) == (600, 420)
        assert sum(c["pixels"] for c in doc["classes"]) == 600 * 420
        job = httpx.get(f"{base}/v1/jobs/{job_id}",
                        headers={"Authorization": f"Bearer {key}"}).json()
        assert job["status"] == "succeeded" and job["labels"] == {"sample": "S-1"}
        assert "/uploads/" in job["source_url"]
        # an OME-TIFF of two scenes: uploaded once, a job per scene, one batch
        mount = tmp_path / "mount.ome.tif"
        write_scenes(mount, thumbnail=False)
        res = _cli("submit", str(mount), "--wait", env=client_env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"{mount}: 2 scenes, one job each" in " ".join(res.stdout.split())
        assert "== mount.ome.tif scene 0 (job" in res.stdout  # each table says its image
        assert "== mount.ome.tif scene 1 (job" in res.stdout
        ids = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("job ")]
        jobs = [httpx.get(f"{base}/v1/jobs/{i}", headers={"Authorization": f"Bearer {key}"}
                          ).json() for i in ids]
        assert sorted((j["scene"], j["width"], j["status"]) for j in jobs) == [
            (0, 160, "succeeded"), (1, 150, "succeeded")]
        assert len({j["source_url"] for j in jobs}) == 1 and jobs[0]["batch_id"] is not None
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
        logs.close()
