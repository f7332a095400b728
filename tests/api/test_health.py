"""/healthz and /readyz (no auth), and the API's import boundary (no torch, no worker)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings
from tests.api.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


def test_healthz_needs_no_key(api_settings):
    r = TestClient(create_app(api_settings)).get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_is_200_when_database_and_broker_answer(api_settings):
    r = TestClient(create_app(api_settings)).get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_broker_is_down(tmp_path):
    settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    r = TestClient(create_app(settings)).get("/readyz")
    assert time.monotonic() - started < 6
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] != "ok"
    assert body["detail"] == "not ready: broker failed"


def test_readyz_is_503_when_the_database_is_down(tmp_path):
    down = Settings(home=tmp_path / "home", database_url="postgresql://postgres@127.0.0.1:1/x")
    r = TestClient(create_app(down)).get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["broker"] == "ok"
    assert "does not answer" in r.json()["checks"]["database"]
    assert r.json()["detail"] == "not ready: database failed"


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_the_api_never_imports_torch_or_worker(tmp_path):
    modules = _modules_after(
        "from api.app import create_app\n"
        "from core.settings import Settings\n"
        f"create_app(Settings(home={str(tmp_path)!r}))"
    )
    assert "fastapi" in modules and "api.app" in modules  # the probe ran
    assert "torch" not in modules
    assert not {m for m in modules if m == "worker" or m.startswith("worker.")}


def test_serve_preparation_does_not_import_torch(tmp_path):
    modules = _modules_after(
        "from cli.serve import prepare_server\n"
        "from core.settings import Settings\n"
        f"prepare_server(Settings(home={str(tmp_path)!r}))\n"
        "import api.app"
    )
    assert "models.registry" in modules  # it did publish the bundled models
    assert "torch" not in modules


def test_openapi_documents_bearer_auth_and_error_schema(api_settings):
    spec = TestClient(create_app(api_settings)).get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "ErrorOut" in spec["components"]["schemas"]
    post = spec["paths"]["/v1/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "JobCreate")
    assert {"202", "401", "403", "422"} <= set(post["responses"])
