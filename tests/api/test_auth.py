"""API keys: hashed storage, 401/403 answers, auth off only on loopback, the CLI commands."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.auth import AuthConfigError
from cli.main import main
from core.settings import get_settings
from storage.jobtable.engine import cached_engine
from storage.jobtable.tables import ApiKey
from tests.api.conftest import make_settings


def test_valid_key_is_accepted(api):
    assert api.client.get("/v1/jobs").status_code == 200


def test_missing_header_is_401_with_how_to(api):
    r = api.client.get("/v1/jobs", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "missing Authorization header" in r.json()["detail"]
    assert "pelletseg apikey create" in r.json()["detail"]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Token psk_abc"])
def test_malformed_header_is_401(api, header):
    r = api.client.get("/v1/models", headers={"Authorization": header})
    assert r.status_code == 401
    assert "expected 'Bearer <API key>'" in r.json()["detail"]


@pytest.mark.parametrize("key", ["psk_" + "x" * 43, "not-a-key", "psk_"])
def test_unknown_key_is_401(api, key):
    r = api.client.post("/v1/jobs", json={"source_url": "s3://b/x.tif"},
                        headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401
    assert r.json()["detail"].startswith("invalid API key")
    assert api.table.jobs.list() == []  # nothing was submitted


def test_revoked_key_is_403(api):
    record = api.keys.verify(api.key)
    api.keys.revoke(record.id)
    r = api.client.get("/v1/jobs")
    assert r.status_code == 403
    assert f"{api.key[:8]}... (tests) was revoked" in r.json()["detail"]


def test_keys_are_stored_as_sha256_only(api):
    with cached_engine(api.settings.resolved_database_url).connect() as conn:
        rows = conn.execute(select(ApiKey.__table__)).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    assert row["key_hash"] == hashlib.sha256(api.key.encode()).hexdigest()
    assert row["prefix"] == api.key[:8] and api.key.startswith("psk_")
    assert all(api.key not in str(value) for value in row.values())


def test_auth_can_be_off_only_on_loopback(tmp_path, monkeypatch):
    open_settings = make_settings(tmp_path, api_auth=False)
    client = TestClient(create_app(open_settings))
    assert client.get("/v1/jobs").status_code == 200
    with pytest.raises(AuthConfigError, match=r"only when the API binds 127.0.0.1"):
        create_app(make_settings(tmp_path, api_auth=False, api_host="0.0.0.0"))
    monkeypatch.setenv("PELLETSEG_API_AUTH", "false")
    assert get_settings(home=tmp_path).api_auth is False
    monkeypatch.delenv("PELLETSEG_API_AUTH")
    assert get_settings(home=tmp_path).api_auth is True


def test_serve_refuses_no_auth_on_another_host(tmp_path, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    result = CliRunner().invoke(
        main, ["serve", "--no-auth", "--host", "0.0.0.0", "--home", str(tmp_path / "h")]
    )
    assert result.exit_code == 2
    assert "only when the API binds 127.0.0.1" in result.output
    assert not (tmp_path / "h").exists()  # refused before touching the stack


def test_serve_migrates_publishes_and_runs_uvicorn(tmp_path, monkeypatch):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    home = tmp_path / "h"
    result = CliRunner().invoke(main, ["serve", "--no-auth", "--port", "8123", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert isinstance(served["app"], FastAPI)
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    client = TestClient(served["app"])  # auth is off: no header needed
    names = [m["name"] for m in client.get("/v1/models").json()]
    assert "ebc-unet-mnv2" in names  # the bundled model was published


def test_apikey_cli_create_list_revoke(tmp_path):
    home = tmp_path / "h"
    runner = CliRunner()
    created = runner.invoke(main, ["apikey", "create", "lims", "--home", str(home)])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("psk_") and len(key) > 40
    client = TestClient(create_app(get_settings(home=home)),
                        headers={"Authorization": f"Bearer {key}"})
    assert client.get("/v1/jobs").status_code == 200
    listed = runner.invoke(main, ["apikey", "list", "--home", str(home)])
    assert "lims" in listed.output and key[:8] in listed.output and key not in listed.output
    key_id = listed.output.split("\t")[0]
    revoked = runner.invoke(main, ["apikey", "revoke", key_id, "--home", str(home)])
    assert revoked.exit_code == 0, revoked.output
    assert client.get("/v1/jobs").status_code == 403
    missing = runner.invoke(main, ["apikey", "revoke", "999", "--home", str(home)])
    assert missing.exit_code == 1 and "does not exist" in missing.output
