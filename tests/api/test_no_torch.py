"""The API process never imports the worker, training code or torch: ``pelletseg serve``'s own
code path (migrate, publish the bundled models, build the app) runs in a fresh interpreter,
serves requests on every kind of route, and reports ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "torchvision", "segmentation_models_pytorch", "timm", "monai", "worker",
             "training", "benchmarks")

PROBE = """
import json, sys
import uvicorn
from fastapi.testclient import TestClient

def serve(app, **_):
    client = TestClient(app)
    answers = {
        "healthz": client.get("/healthz").status_code,
        "models": client.get("/v1/models").status_code,
        "submit": client.post("/v1/jobs", json={"source_url": "s3://pellets/P-1.tif"}).status_code,
        "jobs": client.get("/v1/jobs").status_code,
        "dashboard": client.get("/").status_code,
        "metrics": client.get("/metrics").status_code,
    }
    job = client.get("/v1/jobs").json()["jobs"][0]["id"]
    answers["tiles"] = client.get(f"/v1/jobs/{job}/tiles/overlay.dzi").status_code
    print(json.dumps({"answers": answers, "modules": sorted(sys.modules)}))

uvicorn.run = serve
from cli.main import main
main(["serve", "--no-auth", "--home", sys.argv[1]], standalone_mode=False)
"""


def test_pelletseg_serve_imports_no_worker_training_or_torch(tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "home")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # every kind of route answered (tiles: 409, the job has not succeeded)
    assert report["answers"] == {"healthz": 200, "models": 200, "submit": 202, "jobs": 200,
                                 "dashboard": 200, "metrics": 200, "tiles": 409}
    modules = report["modules"]
    assert "api.app" in modules and "submission.service" in modules  # the probe ran the app
    leaked = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert leaked == [], f"the API process imported {leaked}"
