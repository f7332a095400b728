"""The API over the real PostgreSQL job table: keys, submission, listing, cancel, resume."""

from __future__ import annotations

import pytest

from core.settings import Settings
from core.states import JobStatus
from tests.api.conftest import MODEL, drain_tasks, make_api, running_job


@pytest.mark.postgres
class TestOnPostgres:
    @pytest.fixture
    def pg_api(self, tmp_path, empty_pg_url):
        settings = Settings(home=tmp_path / "home", database_url=empty_pg_url,
                            default_model=MODEL)
        settings.ensure_home()
        return make_api(settings)

    def test_submit_idempotently_then_list_by_label(self, pg_api):
        body = {"source_url": "s3://b/p.tif", "labels": {"lab": "north"}, "idempotency_key": "k"}
        first = pg_api.client.post("/v1/jobs", json=body)
        again = pg_api.client.post("/v1/jobs", json=body)
        other = pg_api.client.post("/v1/jobs", json={"source_url": "s3://b/q.tif"})
        assert first.status_code == again.status_code == other.status_code == 202
        assert first.json()["id"] == again.json()["id"] != other.json()["id"]
        listed = pg_api.client.get("/v1/jobs", params={"label": "lab:north"}).json()
        assert [j["id"] for j in listed["jobs"]] == [first.json()["id"]]
        page = pg_api.client.get("/v1/jobs", params={"limit": 1}).json()
        assert [j["id"] for j in page["jobs"]] == [other.json()["id"]]
        assert page["next_offset"] == 1
        assert sorted(t[1] for t in drain_tasks(pg_api.settings)) == sorted(
            [first.json()["id"], other.json()["id"]])

    def test_cancel_and_resume_rows(self, pg_api):
        job = running_job(pg_api.table, rows=3, done=(1,))
        assert pg_api.client.post(f"/v1/jobs/{job.id}/cancel").json()["status"] == "cancelled"
        assert pg_api.client.post(f"/v1/jobs/{job.id}/cancel").status_code == 409
        r = pg_api.client.post(f"/v1/jobs/{job.id}/resume")
        assert r.status_code == 202 and r.json()["status"] == "running"
        assert drain_tasks(pg_api.settings) == [
            ("pelletseg.segment_row", job.id, 0), ("pelletseg.segment_row", job.id, 2)]

    def test_batch_counts_and_resume(self, pg_api):
        batch = pg_api.client.post("/v1/batches", json={"jobs": [
            {"source_url": "s3://b/1.tif"}, {"source_url": "s3://b/2.tif"}]}).json()
        first = batch["jobs"][0]
        assert pg_api.table.jobs.transition(first["id"], JobStatus.FAILED, error="gone")
        assert pg_api.table.jobs.batch_counts(batch["id"]) == {"failed": 1, "queued": 1}
        drain_tasks(pg_api.settings)
        r = pg_api.client.post(f"/v1/batches/{batch['id']}/resume")
        assert r.status_code == 202 and r.json()["resumed"] == [first["id"]]
        assert drain_tasks(pg_api.settings) == [("pelletseg.plan_job", first["id"])]
        assert pg_api.table.jobs.batch_counts(batch["id"]) == {"queued": 2}

    def test_revoked_key_is_refused(self, pg_api):
        pg_api.keys.revoke(pg_api.keys.verify(pg_api.key).id)
        assert pg_api.client.get("/v1/models").status_code == 403
