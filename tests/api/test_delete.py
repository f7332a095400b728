"""DELETE /v1/jobs/{id} and DELETE /v1/batches/{id}: an ended job's objects removed, the job
kept as a ``deleted`` record that listings show only when asked; 409 while it runs; auth."""

from __future__ import annotations

from core.states import JobStatus
from storage.blobs import BlobStore, output_key, row_key
from tests.api.conftest import new_job, running_job


def _stored(api, job_id: str, rows: int = 2) -> BlobStore:
    blobs = BlobStore(api.settings.resolved_storage_url)
    for i in range(rows):
        blobs.put_bytes(row_key(job_id, i), b"s" * 10)
    blobs.put_bytes(output_key(job_id, "labels.tif"), b"L" * 100)
    return blobs


def test_an_ended_job_is_deleted_once_and_listed_only_when_asked(api):
    job = running_job(api.table, rows=2, done=(0, 1))
    kept = new_job(api.table)
    blobs = _stored(api, job.id)
    assert api.table.jobs.get(job.id).status == JobStatus.REDUCING  # its last row done
    r = api.client.delete(f"/v1/jobs/{job.id}")
    assert r.status_code == 409 and "only a job that has ended" in r.json()["detail"]
    assert api.table.jobs.transition(job.id, JobStatus.FAILED, error="reducer: disk full")
    r = api.client.delete(f"/v1/jobs/{job.id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["objects_removed"], body["bytes_removed"]) == (
        "deleted", 3, 2 * 10 + 100)
    assert body["rows_done"] == 2 and body["error"] == "reducer: disk full"  # the record stays
    assert blobs.list(f"jobs/{job.id}") == []
    assert api.client.get(f"/v1/jobs/{job.id}").json()["status"] == "deleted"
    assert [j["id"] for j in api.client.get("/v1/jobs").json()["jobs"]] == [kept.id]
    listed = api.client.get("/v1/jobs", params={"status": "deleted"}).json()["jobs"]
    assert [j["id"] for j in listed] == [job.id]
    again = api.client.delete(f"/v1/jobs/{job.id}").json()
    assert (again["status"], again["objects_removed"]) == ("deleted", 0)
    r = api.client.post(f"/v1/jobs/{job.id}/resume")
    assert r.status_code == 409 and "is deleted" in r.json()["detail"]
    assert api.client.get(f"/v1/jobs/{job.id}/results").status_code == 409
    assert api.client.delete("/v1/jobs/no-such-job").status_code == 404
    assert api.client.delete(f"/v1/jobs/{kept.id}").status_code == 409  # queued


def test_a_batch_deletes_its_ended_jobs_only(api):
    batch = api.client.post("/v1/batches", json={"jobs": [
        {"source_url": "s3://p/1.tif"}, {"source_url": "s3://p/2.tif"}]}).json()
    first, second = sorted(batch["jobs"], key=lambda j: j["created_at"])
    blobs = _stored(api, first["id"])
    _stored(api, second["id"])
    r = api.client.delete(f"/v1/batches/{batch['id']}")
    assert r.status_code == 409 and "(2 queued)" in r.json()["detail"]
    assert api.client.post(f"/v1/jobs/{first['id']}/cancel").status_code == 200
    r = api.client.delete(f"/v1/batches/{batch['id']}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deleted"] == [first["id"]] and body["objects_removed"] == 3
    assert body["status_counts"] == {"deleted": 1, "queued": 1}  # the batch stays readable
    assert blobs.list(f"jobs/{first['id']}") == [] and len(blobs.list(f"jobs/{second['id']}")) == 3
    assert api.client.delete("/v1/batches/nope").status_code == 404


def test_deleting_needs_a_key(api):
    job = new_job(api.table)
    r = api.client.delete(f"/v1/jobs/{job.id}", headers={"Authorization": ""})
    assert r.status_code == 401
    r = api.client.delete("/v1/batches/b", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401

