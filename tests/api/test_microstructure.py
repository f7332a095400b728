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


def _job_option_round_trip(api, name, value, bads, batch_default, item_value):
    """A job option given with ``POST /v1/jobs`` is stored on the spec and shown in the job's
    view; left out of the spec (or null there) when not given; refused (422) when invalid; a
    batch's value fills the items that leave it null."""
    r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif", name: value})
    assert r.status_code == 202, r.text
    assert r.json()[name] == value
    assert api.table.jobs.get(r.json()["id"]).spec[name] == value
    plain = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/y.tif"}).json()
    assert plain[name] is None
    assert api.table.jobs.get(plain["id"]).spec.get(name) is None
    for bad in bads:
        r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif", name: bad})
        assert r.status_code == 422, bad
    batch = api.client.post("/v1/batches", json={
        "jobs": [{"source_url": "s3://pellets/a.tif"},
                 {"source_url": "s3://pellets/b.tif", name: item_value}],
        name: batch_default})
    assert batch.status_code == 202, batch.text
    assert sorted(j[name] for j in batch.json()["jobs"]) == sorted([batch_default, item_value])


def test_pixel_size_um_is_part_of_the_job_request(api):
    _job_option_round_trip(api, "pixel_size_um", 0.42, (0, -1, "abc"), 0.5, 2.0)


def test_precision_is_part_of_the_job_request(api):
    """A job's precision (JobSpec.precision) is stored on its spec and shown in its view, also
    in words; null unless asked; a batch's applies to the jobs that leave it null."""
    _job_option_round_trip(api, "precision", "fp32", ("fp64", "float32", 16), "fp32", "bf16")
    r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif", "precision": "fp32"})
    assert r.json()["precision_name"] == "float32"  # in words, for the job page
    plain = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/y.tif"}).json()
    assert plain["precision_name"] is None
    assert "precision" not in api.table.jobs.get(plain["id"]).spec


def test_significant_bits_are_part_of_the_job_request(api):
    """A job's significant bits (JobSpec.significant_bits, for a 12-bit camera's 16-bit files)
    are stored on its spec (version 5) and shown in its view; left out of the spec unless
    given; 8-16; a batch's apply to the jobs that leave them null."""
    _job_option_round_trip(api, "significant_bits", 12, (7, 17, "twelve", 12.5), 12, 14)
    r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif",
                                          "significant_bits": 12})
    assert api.table.jobs.get(r.json()["id"]).spec["spec_version"] == 5
    plain = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/y.tif"}).json()
    assert "significant_bits" not in api.table.jobs.get(plain["id"]).spec


def test_a_scene_is_part_of_the_job_request(api):
    """A job's scene (JobSpec.scene, the image of a multi-image OME-TIFF) is stored on its
    spec (version 6) and shown in its view; 0 is a scene; a batch's applies to the jobs that
    leave it null."""
    _job_option_round_trip(api, "scene", 1, (-1, "all", 1.5), 0, 2)
    r = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif", "scene": 0})
    assert r.json()["scene"] == 0
    assert api.table.jobs.get(r.json()["id"]).spec["spec_version"] == 6


def test_a_job_refused_for_several_scenes_lists_them_in_its_view(api):
    job = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/mount.ome.tif"}).json()
    assert job["scenes"] is None
    assert api.table.jobs.transition(job["id"], JobStatus.PLANNING)
    assert api.table.jobs.transition(job["id"], JobStatus.FAILED, error="several scenes",
                                     outputs={"scenes": [1, 2]})
    seen = api.client.get(f"/v1/jobs/{job['id']}").json()
    assert seen["scenes"] == [1, 2] and seen["outputs"] == []


def test_a_jobs_warnings_are_in_its_view(api):
    """GET /v1/jobs/{id} ``warnings``: what the planner stored (core.job_warnings), empty
    before planning and for jobs without any."""
    from core.job_warnings import WarningCode, job_warning

    job = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/x.tif"}).json()
    assert job["warnings"] == []
    warning = job_warning(WarningCode.PIXEL_SIZE_UNLIKE_MODEL, "pixel size 1.000 µm/px is ...")
    assert api.table.jobs.transition(job["id"], JobStatus.PLANNING)
    assert api.table.jobs.transition(job["id"], JobStatus.RUNNING, width=10, height=10,
                                     outputs={"pixel_size_um": 1.0, "warnings": [warning]})
    seen = api.client.get(f"/v1/jobs/{job['id']}").json()
    assert seen["warnings"] == [warning] and "warnings" not in seen["outputs"]
    listed = api.client.get("/v1/jobs").json()["jobs"]
    assert next(j for j in listed if j["id"] == job["id"])["warnings"] == [warning]
    # a code this API does not know (a newer worker's: workers are upgraded first) is shown
    newer = api.client.post("/v1/jobs", json={"source_url": "s3://pellets/y.tif"}).json()
    assert api.table.jobs.transition(newer["id"], JobStatus.PLANNING)
    assert api.table.jobs.transition(newer["id"], JobStatus.RUNNING, width=10, height=10,
                                     outputs={"warnings": [{"code": "focus", "message": "m"}]})
    r = api.client.get(f"/v1/jobs/{newer['id']}")
    assert r.status_code == 200 and r.json()["warnings"] == [{"code": "focus", "message": "m"}]
