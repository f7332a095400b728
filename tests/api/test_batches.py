"""/v1/batches and GET /v1/jobs?batch=: one job per image, one batch id, idempotent retries,
all-or-nothing validation; auth on the batch and upload routes."""

from __future__ import annotations

import csv
import io
import json

import pytest

from core.states import JobStatus
from microstructure import section_figures
from microstructure.synthetic import make_section
from storage.blobs import BlobStore, output_key
from submission.reports import MAX_BATCH
from tests.api.conftest import MODEL, drain_tasks, running_job
from tests.microstructure.test_batch import _docs

PLAN = "pelletseg.plan_job"
UPLOAD_ID = "0d8c9a52-43be-4f0e-a3c4-6d16a3f0c1aa"


def test_batch_creates_one_job_each_with_shared_defaults(api):
    body = {
        "jobs": [{"source_url": "s3://p/1.tif", "labels": {"sample": "P-1"}},
                 {"source_url": "s3://p/2.tif", "labels": {"sample": "P-2", "lab": "own"},
                  "tile_size": 512, "halo": 64},
                 {"source_url": "s3://p/3.tif"}],
        "labels": {"lab": "north", "campaign": "c7"},
        "tile_size": 256, "halo": 32,
    }
    r = api.client.post("/v1/batches", json=body)
    assert r.status_code == 202, r.text
    batch = r.json()
    assert batch["jobs_total"] == 3 and batch["status_counts"] == {"queued": 3}
    assert r.headers["location"].endswith(f"/v1/batches/{batch['id']}")
    jobs = {j["source_url"]: j for j in batch["jobs"]}
    assert {j["batch_id"] for j in jobs.values()} == {batch["id"]}
    assert jobs["s3://p/1.tif"]["labels"] == {"lab": "north", "campaign": "c7", "sample": "P-1"}
    assert jobs["s3://p/2.tif"]["labels"]["lab"] == "own"  # a job's own label wins
    assert (jobs["s3://p/1.tif"]["tile_size"], jobs["s3://p/1.tif"]["halo"]) == (256, 32)
    assert (jobs["s3://p/2.tif"]["tile_size"], jobs["s3://p/2.tif"]["halo"]) == (512, 64)
    assert jobs["s3://p/3.tif"]["model"]["name"] == MODEL
    assert sorted(t[1] for t in drain_tasks(api.settings)) == sorted(j["id"] for j in jobs.values())
    # The batch filter of GET /v1/jobs, next to another job that is not in it.
    api.client.post("/v1/jobs", json={"source_url": "s3://p/other.tif"})
    listed = api.client.get("/v1/jobs", params={"batch": batch["id"]}).json()["jobs"]
    assert sorted(j["id"] for j in listed) == sorted(j["id"] for j in jobs.values())
    assert len(api.client.get("/v1/jobs").json()["jobs"]) == 4
    assert api.client.get("/v1/jobs", params={"batch": "nope"}).json()["jobs"] == []
    got = api.client.get(f"/v1/batches/{batch['id']}").json()
    assert got["jobs_total"] == 3 and got["id"] == batch["id"]
    assert api.client.get("/v1/batches/nope").status_code == 404


def test_batch_with_idempotency_key_is_created_once(api):
    body = {"jobs": [{"source_url": "s3://p/1.tif"}, {"source_url": "s3://p/2.tif"}],
            "idempotency_key": "lims-batch-9"}
    first = api.client.post("/v1/batches", json=body).json()
    again = api.client.post("/v1/batches", json=body)
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert sorted(j["id"] for j in again.json()["jobs"]) == sorted(j["id"] for j in first["jobs"])
    assert len(drain_tasks(api.settings)) == 2 and len(api.table.jobs.list()) == 2


@pytest.mark.parametrize("jobs, message", [
    ([{"source_url": "s3://p/1.tif"}, {"source_url": "http://10.0.0.1/x"}],
     "jobs[1]: http://10.0.0.1/x: scheme 'http' is not allowed"),
    ([{"source_url": "s3://p/1.tif"}, {"source_url": "s3://p/2.tif", "model": "nope"}],
     "jobs[1]: model 'nope' is not registered"),
    ([{"upload_id": UPLOAD_ID}], "jobs[0]: upload_id"),
    ([{"source_url": "s3://p/1.tif", "tile_size": 500}], "jobs[0]: tile_size must be a multiple"),
    ([], "jobs: List should have at least 1 item"),
])
def test_one_invalid_job_fails_the_whole_batch(api, jobs, message):
    r = api.client.post("/v1/batches", json={"jobs": jobs})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert api.table.jobs.list() == [] and drain_tasks(api.settings) == []


def test_a_batch_documents_and_checks_its_options_as_a_job_does(api):
    """The options a batch sets for its jobs have the same schema (limits, descriptions) as a
    job's own: one definition (api.schemas.JobOptions)."""
    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    job, batch = schemas["JobCreate"]["properties"], schemas["BatchCreate"]["properties"]
    options = ("model", "model_version", "tile_size", "halo", "labels", "webhook_url",
               "pixel_size_um", "precision")
    assert {name: batch[name] for name in options} == {name: job[name] for name in options}
    assert all(job[name].get("description") for name in options)
    r = api.client.post("/v1/batches", json={"jobs": [{"source_url": "s3://p/1.tif"}],
                                             "pixel_size_um": 0})
    assert r.status_code == 422 and "pixel_size_um" in r.json()["detail"], r.text
    assert api.table.jobs.list() == []


def test_batch_of_too_many_jobs_is_refused(api):
    jobs = [{"source_url": "s3://p/x.tif"}] * (MAX_BATCH + 1)
    r = api.client.post("/v1/batches", json={"jobs": jobs})
    assert r.status_code == 422 and f"at most {MAX_BATCH} items" in r.json()["detail"]
    assert api.table.jobs.list() == []


def test_batch_jobs_can_be_cancelled_and_counted_by_status(api):
    batch = api.client.post("/v1/batches", json={
        "jobs": [{"source_url": "s3://p/1.tif"}, {"source_url": "s3://p/2.tif"}]}).json()
    api.client.post(f"/v1/jobs/{batch['jobs'][0]['id']}/cancel")
    got = api.client.get(f"/v1/batches/{batch['id']}").json()
    assert got["status_counts"] == {"cancelled": 1, "queued": 1}
    assert api.table.jobs.get(batch["jobs"][0]["id"]).status == JobStatus.CANCELLED


def test_batch_results_csv_lists_its_sections_in_submission_order(api):
    """One line per job of the batch, oldest first: a succeeded job's figures from its stored
    documents, a failed job's error, a queued job's status; 404 for an unknown batch."""
    body = {"jobs": [{"source_url": f"s3://p/{i}.tif", "labels": {"sample": f"P-{i}"}}
                     for i in (1, 2, 3)]}
    batch = api.client.post("/v1/batches", json=body).json()
    ids = {j["source_url"]: j["id"] for j in batch["jobs"]}
    done = api.table.jobs.get(ids["s3://p/1.tif"])
    running_job(api.table, rows=1, done=(0,), job=done)
    _, fractions, micro = _docs(make_section(120, 160, [(60, 80, 50, 12)], seed=4), ps=1.25,
                                job_id=done.id)
    blobs = BlobStore(api.settings.resolved_storage_url)
    for name, doc in (("fractions.json", fractions), ("microstructure.json", micro)):
        blobs.put_bytes(output_key(done.id, name), json.dumps(doc).encode())
    assert api.table.jobs.transition(done.id, JobStatus.SUCCEEDED)
    assert api.table.jobs.transition(ids["s3://p/2.tif"], JobStatus.FAILED,
                                     error="the source is not an image")

    r = api.client.get(f"/v1/batches/{batch['id']}/results.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="batch-{batch["id"]}-results.csv"' in r.headers["content-disposition"]
    one, two, three = csv.DictReader(io.StringIO(r.text))
    assert [x["source"] for x in (one, two, three)] == ["s3://p/1.tif", "s3://p/2.tif",
                                                        "s3://p/3.tif"]
    assert [x["label_sample"] for x in (one, two, three)] == ["P-1", "P-2", "P-3"]
    assert [x["status"] for x in (one, two, three)] == ["succeeded", "failed", "queued"]
    assert one["job_id"] == done.id and one["model"] == f"{MODEL}:{done.model_version}"
    figures = section_figures(micro)
    assert int(one["pellets"]) == figures["pellets"] == 1
    assert float(one["porosity_closed_percent"]) == figures["porosity_closed_percent"]
    assert float(one["percent_of_image_hematite"]) == fractions["classes"][2]["percent"]
    assert two["error"] == "the source is not an image" and two["percent_of_image_pore"] == ""
    assert three["pellets"] == "" and three["error"] == ""
    missing = api.client.get("/v1/batches/nope/results.csv")
    assert missing.status_code == 404 and "batch nope does not exist" in missing.json()["detail"]


NEW_ROUTES = [
    ("POST", "/v1/batches", {"jobs": [{"source_url": "s3://p/1.tif"}]}),
    ("GET", "/v1/batches/x", None),
    ("GET", "/v1/batches/x/results.csv", None),
    ("POST", "/v1/uploads", {"filename": "a.tif", "size": 3}),
    ("GET", f"/v1/uploads/{UPLOAD_ID}", None),
    ("POST", f"/v1/uploads/{UPLOAD_ID}/urls", {"parts": [1]}),
    ("PUT", f"/v1/uploads/{UPLOAD_ID}/parts/1", None),
    ("POST", f"/v1/uploads/{UPLOAD_ID}/complete", None),
    ("DELETE", f"/v1/uploads/{UPLOAD_ID}", None),
]


@pytest.mark.parametrize("method, path, body", NEW_ROUTES)
def test_new_routes_need_a_valid_key(api, method, path, body):
    kwargs = {"json": body} if body is not None else {"content": b"abc"}
    r = api.client.request(method, path, headers={"Authorization": ""}, **kwargs)
    assert r.status_code == 401 and "missing Authorization header" in r.json()["detail"]
    r = api.client.request(method, path, headers={"Authorization": "Bearer psk_wrong"}, **kwargs)
    assert r.status_code == 401 and r.json()["detail"].startswith("invalid API key")
    api.keys.revoke(api.keys.verify(api.key).id)
    r = api.client.request(method, path, **kwargs)
    assert r.status_code == 403 and "was revoked" in r.json()["detail"]
    assert api.table.jobs.list() == []


def test_batch_resume_continues_its_failed_and_interrupted_jobs_only(api):
    body = {"jobs": [{"source_url": f"s3://p/{i}.tif"} for i in range(5)]}
    batch = api.client.post("/v1/batches", json=body).json()
    drain_tasks(api.settings)
    jobs = sorted(api.table.jobs.list(batch_id=batch["id"]), key=lambda j: (j.created_at, j.id))
    failed, interrupted, cancelled, queued, done = (j.id for j in jobs)
    running_job(api.table, rows=3, done=(0, 2), job=api.table.jobs.get(failed))
    assert api.table.jobs.transition(failed, JobStatus.FAILED, error="row 1 failed")
    assert api.table.jobs.transition(interrupted, JobStatus.INTERRUPTED)
    assert api.table.jobs.transition(cancelled, JobStatus.CANCELLED)
    running_job(api.table, rows=1, done=(0,), job=api.table.jobs.get(done))  # -> reducing
    assert api.table.jobs.transition(done, JobStatus.SUCCEEDED)
    other = api.client.post("/v1/jobs", json={"source_url": "s3://p/other.tif"}).json()["id"]
    assert api.table.jobs.transition(other, JobStatus.FAILED)  # outside the batch
    drain_tasks(api.settings)

    r = api.client.post(f"/v1/batches/{batch['id']}/resume")
    assert r.status_code == 202, r.text
    assert r.json()["resumed"] == [failed, interrupted]  # in submission order
    assert r.json()["status_counts"] == {"running": 1, "queued": 2, "cancelled": 1,
                                         "succeeded": 1}
    # each as a job's resume: the failed one re-runs its row not done, the other is planned
    assert drain_tasks(api.settings) == [("pelletseg.segment_row", failed, 1),
                                         ("pelletseg.plan_job", interrupted)]
    assert api.table.jobs.get(other).status == JobStatus.FAILED
    assert [api.table.jobs.get(j).status for j in (cancelled, queued, done)] == [
        JobStatus.CANCELLED, JobStatus.QUEUED, JobStatus.SUCCEEDED]

    again = api.client.post(f"/v1/batches/{batch['id']}/resume")
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"batch {batch['id']} has no failed or interrupted job to resume (1 cancelled, "
        "2 queued, 1 running, 1 succeeded); a cancelled job is resumed on its own: "
        "pelletseg resume JOB_ID")
    assert drain_tasks(api.settings) == []
    assert api.client.post("/v1/batches/nope/resume").status_code == 404


def test_batch_cancel_stops_its_jobs_not_ended_only(api):
    body = {"jobs": [{"source_url": f"s3://p/{i}.tif"} for i in range(4)]}
    batch = api.client.post("/v1/batches", json=body).json()
    jobs = sorted(api.table.jobs.list(batch_id=batch["id"]), key=lambda j: (j.created_at, j.id))
    done, running, queued, failed = (j.id for j in jobs)
    running_job(api.table, rows=1, done=(0,), job=api.table.jobs.get(done))  # -> reducing
    assert api.table.jobs.transition(done, JobStatus.SUCCEEDED)
    running_job(api.table, rows=3, done=(0,), job=api.table.jobs.get(running))
    assert api.table.jobs.transition(failed, JobStatus.FAILED, error="gone")

    r = api.client.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["cancelled"] == [running, queued]  # in submission order
    assert r.json()["status_counts"] == {"succeeded": 1, "cancelled": 2, "failed": 1}
    assert api.table.rows.progress(running).done == 1  # its done row is kept for a resume
    again = api.client.post(f"/v1/batches/{batch['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"batch {batch['id']} has no job left to cancel: every job has ended (2 cancelled, "
        "1 failed, 1 succeeded)")
    assert api.client.post("/v1/batches/nope/cancel").status_code == 404
