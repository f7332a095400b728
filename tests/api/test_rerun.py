"""POST /v1/jobs/{id}/rerun and /v1/batches/{id}/rerun: a new job (a new batch) on the
earlier source with its options and ``rerun_of``; 422 for an unknown model, 404 for an unknown
job or batch."""

from __future__ import annotations


def test_a_job_and_a_batch_rerun_as_new_ones(api):
    batch = api.client.post("/v1/batches", json={"labels": {"lab": "north"}, "jobs": [
        {"source_url": "s3://p/1.tif"}, {"source_url": "s3://p/2.tif"}]}).json()
    first = sorted(batch["jobs"], key=lambda j: j["created_at"])[0]
    r = api.client.post(f"/v1/jobs/{first['id']}/rerun")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    assert job["source_url"] == "s3://p/1.tif" and job["status"] == "queued"
    assert job["labels"] == {"lab": "north", "rerun_of": first["id"]}
    assert job["batch_id"] is None
    r = api.client.post(f"/v1/jobs/{first['id']}/rerun", json={"model": "no-such-model"})
    assert r.status_code == 422 and "no-such-model" in r.json()["detail"]
    r = api.client.post(f"/v1/batches/{batch['id']}/rerun", json={"model_version": "1"})
    assert r.status_code == 202, r.text
    again = r.json()
    assert again["id"] != batch["id"] and again["jobs_total"] == 2
    assert r.headers["location"].endswith(f"/v1/batches/{again['id']}")
    assert sorted(j["labels"]["rerun_of"] for j in again["jobs"]) == sorted(
        j["id"] for j in batch["jobs"])
    # a rerun may correct the pixel size and significant bits (kept when left null)
    r = api.client.post(f"/v1/jobs/{first['id']}/rerun",
                        json={"pixel_size_um": 0.25, "significant_bits": 12})
    assert r.status_code == 202, r.text
    assert (r.json()["pixel_size_um"], r.json()["significant_bits"]) == (0.25, 12)
    spec = api.table.jobs.get(r.json()["id"]).spec
    assert (spec["pixel_size_um"], spec["significant_bits"]) == (0.25, 12)
    kept = api.client.post(f"/v1/jobs/{r.json()['id']}/rerun").json()
    assert (kept["pixel_size_um"], kept["significant_bits"]) == (0.25, 12)
    r = api.client.post(f"/v1/batches/{batch['id']}/rerun", json={"significant_bits": 14})
    assert {j["significant_bits"] for j in r.json()["jobs"]} == {14}
    # a scene given replaces the earlier job's (kept when null); not for a whole batch
    r = api.client.post(f"/v1/jobs/{first['id']}/rerun", json={"scene": 2})
    assert r.status_code == 202 and r.json()["scene"] == 2
    assert api.client.post(f"/v1/jobs/{r.json()['id']}/rerun").json()["scene"] == 2
    r = api.client.post(f"/v1/batches/{batch['id']}/rerun", json={"scene": 1})
    assert r.status_code == 422 and "cannot give one scene to every job" in r.json()["detail"]
    for bad in ({"significant_bits": 17}, {"pixel_size_um": 0}, {"scene": -1}):
        assert api.client.post(f"/v1/jobs/{first['id']}/rerun", json=bad).status_code == 422
    assert api.client.post("/v1/batches/nope/rerun").status_code == 404
    assert api.client.post("/v1/jobs/nope/rerun").status_code == 404
