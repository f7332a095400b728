"""GET /v1/jobs/{id}/microstructure: 404 with a reason until the job has one, then the stored
microstructure.json; the job request's pixel_size_um (and precision) reaches the spec and the job view."""

from __future__ import annotations

import json

from core.states import JobStatus
from storage.blobs.layout import MICROSTRUCTURE_JSON, output_key
from storage.blobs.store import BlobStore
from tests.api.conftest import running_job
from tests.api.test_results import succeeded_job


def test_microstructure_is_404_until_the_job_succeeded(api):
    job = running_job(api.table, rows=2, done=(0,))
    r = api.client.get(f"/v1/jobs/{job.id}/microstructure")
    assert r.status_code == 404
    assert r.json()["detail"] == (
        f"job {job.id} is running; its microstructure exists once it has succeeded")
    missing = api.client.get("/v1/jobs/no-such-job/microstructure")
    assert missing.status_code == 404 and "no-such-job" in missing.json()["detail"]


def test_succeeded_job_serves_its_microstructure_json(api):
    job, _ = succeeded_job(api)
    report = {"version": 1, "pixel_size_um": 0.5, "pellets": [{"area_mm2": 1.25}],
              "size_distributions": {"pore": {"count": 3}}}
    BlobStore(api.settings.resolved_storage_url).put_bytes(
        output_key(job.id, MICROSTRUCTURE_JSON), json.dumps(report).encode())
    r = api.client.get(f"/v1/jobs/{job.id}/microstructure")
    assert r.status_code == 200
    assert r.json() == report
    assert api.client.get(f"/v1/jobs/{job.id}/microstructure",
                          headers={"Authorization": ""}).status_code == 401


def test_job_reduced_before_microstructure_existed_says_so(api):
    job = running_job(api.table, rows=1, done=(0,))
    assert api.table.jobs.transition(job.id, JobStatus.SUCCEEDED)  # as test_results does
    r = api.client.get(f"/v1/jobs/{job.id}/microstructure")
    assert r.status_code == 404
    assert "has no microstructure.json" in r.json()["detail"]


def test_pixel_size_um_is_part_of_the_job_request(api):
    r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif", "pixel_size_um": 0.42})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["pixel_size_um"] == 0.42
    assert api.table.jobs.get(body["id"]).spec["pixel_size_um"] == 0.42
    for bad in (0, -1, "abc"):
        r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif", "pixel_size_um": bad})
        assert r.status_code == 422, bad
    batch = api.client.post("/v1/batches", json={
        "jobs": [{"source_url": "s3://pellets/a.tif"},
                 {"source_url": "s3://pellets/b.tif", "pixel_size_um": 2.0}],
        "pixel_size_um": 0.5})
    assert batch.status_code == 202, batch.text
    sizes = sorted(j["pixel_size_um"] for j in batch.json()["jobs"])
    assert sizes == [0.5, 2.0]


def test_precision_is_part_of_the_job_request(api):
    """A job's precision (JobSpec.precision) is stored on its spec and shown in its view;
    null unless asked; a batch's applies to the jobs that leave it null."""
    r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif", "precision": "fp32"})
    assert r.status_code == 202, r.text
    assert r.json()["precision"] == "fp32"
    assert r.json()["precision_name"] == "float32"  # in words, for the job page
    assert api.table.jobs.get(r.json()["id"]).spec["precision"] == "fp32"
    plain = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/y.tif"}).json()
    assert plain["precision_name"] is None
    assert plain["precision"] is None and "precision" not in api.table.jobs.get(plain["id"]).spec
    for bad in ("fp64", "float32", 16):
        r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif", "precision": bad})
        assert r.status_code == 422, bad
    batch = api.client.post("/v1/batches", json={
        "jobs": [{"source_url": "s3://pellets/a.tif"},
                 {"source_url": "s3://pellets/b.tif", "precision": "bf16"}],
        "precision": "fp32"})
    assert batch.status_code == 202, batch.text
    assert sorted(j["precision"] for j in batch.json()["jobs"]) == ["bf16", "fp32"]


def test_significant_bits_are_part_of_the_job_request(api):
    """A job's significant bits (JobSpec.significant_bits, for a 12-bit camera's 16-bit files)
    are stored on its spec and shown in its view; left out of the spec unless given; 8-16; a
    batch's apply to the jobs that leave them null."""
    r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif",
                                          "significant_bits": 12})
    assert r.status_code == 202, r.text
    assert r.json()["significant_bits"] == 12
    stored = api.table.jobs.get(r.json()["id"]).spec
    assert (stored["significant_bits"], stored["spec_version"]) == (12, 5)
    plain = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/y.tif"}).json()
    assert plain["significant_bits"] is None
    assert "significant_bits" not in api.table.jobs.get(plain["id"]).spec
    for bad in (7, 17, "twelve", 12.5):
        r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif",
                                              "significant_bits": bad})
        assert r.status_code == 422, bad
    batch = api.client.post("/v1/batches", json={
        "jobs": [{"source_url": "s3://pellets/a.tif"},
                 {"source_url": "s3://pellets/b.tif", "significant_bits": 14}],
        "significant_bits": 12})
    assert batch.status_code == 202, batch.text
    assert sorted(j["significant_bits"] for j in batch.json()["jobs"]) == [12, 14]
