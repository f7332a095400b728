"""Batches, uploads and webhooks through the API over the real PostgreSQL job table."""

from __future__ import annotations

import pytest

from tests.api.conftest import MODEL, drain_tasks, make_api, make_settings

PLAN, NOTIFY = "pelletseg.plan_job", "pelletseg.notify"


@pytest.mark.postgres
class TestExtrasOnPostgres:
    @pytest.fixture
    def pg_api(self, tmp_path, empty_pg_url):
        return make_api(make_settings(tmp_path, database_url=empty_pg_url, default_model=MODEL,
                                      allow_private_webhooks=True))

    def test_batch_filter_and_idempotent_retry(self, pg_api):
        body = {"jobs": [{"source_url": "s3://b/1.tif"}, {"source_url": "s3://b/2.tif"}],
                "labels": {"lab": "north"}, "idempotency_key": "pg-batch"}
        first = pg_api.client.post("/v1/batches", json=body)
        again = pg_api.client.post("/v1/batches", json=body)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        pg_api.client.post("/v1/jobs", json={"source_url": "s3://b/3.tif"})
        listed = pg_api.client.get("/v1/jobs", params={"batch": first.json()["id"],
                                                       "label": "lab:north"}).json()["jobs"]
        assert sorted(j["id"] for j in listed) == sorted(j["id"] for j in first.json()["jobs"])
        assert len(drain_tasks(pg_api.settings)) == 3

    def test_job_from_an_upload_and_cancel_with_a_webhook(self, pg_api):
        up = pg_api.client.post("/v1/uploads", json={"filename": "p.tif", "size": 4}).json()
        assert pg_api.client.put(up["urls"]["1"], content=b"abcd").status_code == 200
        assert pg_api.client.post(f"/v1/uploads/{up['id']}/complete").json()["complete"]
        r = pg_api.client.post("/v1/jobs", json={"upload_id": up["id"],
                                                 "webhook_url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["source_url"].endswith(f"/uploads/{up['id']}/p.tif") and job["webhook"] is None
        cancelled = pg_api.client.post(f"/v1/jobs/{job['id']}/cancel").json()
        assert cancelled["webhook"]["status"] == "pending"
        assert cancelled["webhook"]["event"] == "cancelled"
        assert drain_tasks(pg_api.settings) == [(PLAN, job["id"]), (NOTIFY, job["id"])]
