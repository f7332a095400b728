"""GET /v1/jobs/{id}/rows (the dashboard's row map) on SQLite and the real PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest

from core.settings import Settings
from tests.api.conftest import ROW_INFERENCE, make_api, new_job, running_job


@pytest.fixture
def db_api(tmp_path, db_url):
    settings = Settings(home=tmp_path / "home", database_url=db_url, default_model="test-model")
    settings.ensure_home()
    return make_api(settings)


def test_rows_report_status_bounds_attempts_and_errors(db_api):
    table = db_api.table
    job = running_job(table, rows=4, done=(0, 2))
    assert table.rows.claim(job.id, 1, "gpu-7", lease_seconds=60).claimed
    assert table.rows.claim(job.id, 3, "gpu-8", lease_seconds=60).claimed
    table.rows.fail(job.id, 3, "CUDA out of memory", max_attempts=3)  # back to pending

    r = db_api.client.get(f"/v1/jobs/{job.id}/rows")
    assert r.status_code == 200
    body = r.json()
    assert body["job_id"] == job.id
    rows = body["rows"]
    assert [(x["index"], x["status"], x["y0"], x["y1"]) for x in rows] == [
        (0, "done", 0, 10), (1, "running", 10, 20), (2, "done", 20, 30), (3, "pending", 30, 40)]
    assert [x["attempts"] for x in rows] == [1, 1, 1, 1]
    assert rows[0]["seconds"] == pytest.approx(0.1) and rows[1]["seconds"] is None
    assert (rows[1]["worker"], rows[3]["worker"]) == ("gpu-7", "gpu-8")
    assert rows[3]["error"] == "CUDA out of memory" and rows[0]["error"] is None
    assert datetime.fromisoformat(rows[0]["finished_at"]).tzinfo is not None
    assert rows[1]["finished_at"] is None
    # how each done row was computed (rows.inference); nothing for rows not done
    assert [x["inference"] for x in rows] == [ROW_INFERENCE, None, ROW_INFERENCE, None]
    # ... and in words (core.inference_text), which the dashboard's row map shows
    assert [x["inference_text"] for x in rows] == [
        "openvino on cpu, bfloat16 (first 9 convolutions float32)", None,
        "openvino on cpu, bfloat16 (first 9 convolutions float32)", None]


def test_a_job_before_planning_has_no_rows(db_api):
    job = new_job(db_api.table)
    r = db_api.client.get(f"/v1/jobs/{job.id}/rows")
    assert r.status_code == 200 and r.json() == {"job_id": job.id, "rows": []}


def test_failed_row_is_reported_with_the_job_failure(db_api):
    job = running_job(db_api.table, rows=2, done=(0,))
    assert db_api.table.rows.claim(job.id, 1, "w", lease_seconds=60).claimed
    db_api.table.rows.fail(job.id, 1, "corrupt strip", max_attempts=1)
    rows = db_api.client.get(f"/v1/jobs/{job.id}/rows").json()["rows"]
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "corrupt strip"
    assert db_api.client.get(f"/v1/jobs/{job.id}").json()["status"] == "failed"


def test_unknown_job_is_404_and_rows_need_a_key(db_api):
    r = db_api.client.get("/v1/jobs/no-such-job/rows")
    assert r.status_code == 404 and r.json()["detail"] == "job no-such-job does not exist"
    job = running_job(db_api.table, rows=1)
    r = db_api.client.get(f"/v1/jobs/{job.id}/rows", headers={"Authorization": ""})
    assert r.status_code == 401


def test_rows_route_is_in_the_openapi_contract(db_api):
    spec = db_api.client.get("/openapi.json").json()
    op = spec["paths"]["/v1/jobs/{job_id}/rows"]["get"]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/RowList")
    row = spec["components"]["schemas"]["RowOut"]
    assert {"index", "status", "y0", "y1", "attempts", "seconds", "error", "worker"} <= set(
        row["properties"])
    assert "404" in op["responses"] and "401" in op["responses"]
