"""/v1/jobs/{id}/results, results.csv and files: 409 until success, then the stored outputs
(local store: API routes; S3: presigned URLs). Only the layout's output names are served."""

from __future__ import annotations

import json

import httpx
import pytest

from core.states import JobStatus
from storage.blobs.layout import OUTPUT_FILES, output_key
from storage.blobs.store import BlobStore
from tests.api.conftest import MODEL, make_api, make_settings, running_job

FRACTIONS = {"job_id": "J", "pixels_total": 2000,
             "classes": [{"index": 0, "name": "pore", "pixels": 2000, "percent": 100.0}]}
CSV = "index,name,pixels,percent,percent_of_pellet\n0,pore,2000,100.0,\n"


def succeeded_job(api):
    """A job moved through every state, with its outputs written to the blob store."""
    job = running_job(api.table, rows=2, done=(0, 1))
    blobs = BlobStore(api.settings.resolved_storage_url)
    contents = {name: f"{name} of {job.id}".encode() for name in OUTPUT_FILES}
    contents["fractions.json"] = json.dumps(FRACTIONS).encode()
    contents["fractions.csv"] = CSV.encode()
    for name, data in contents.items():
        blobs.put_bytes(output_key(job.id, name), data)
    api.table.jobs.set_outputs(job.id, {name.replace(".", "_"): output_key(job.id, name)
                                  for name in OUTPUT_FILES} | {"reduce_seconds": 1.5})
    assert api.table.jobs.transition(job.id, JobStatus.SUCCEEDED)
    return job, contents


def test_results_are_409_until_the_job_succeeds(api):
    job = running_job(api.table, rows=2, done=(0,))
    for path in ("results", "results.csv", "files/labels.tif"):
        r = api.client.get(f"/v1/jobs/{job.id}/{path}")
        assert r.status_code == 409, path
        assert r.json()["detail"] == (
            f"job {job.id} is running; results exist once it has succeeded")
    assert api.client.get("/v1/jobs/nope/results").status_code == 404


def test_succeeded_job_serves_fractions_and_files(api):
    job, contents = succeeded_job(api)
    body = api.client.get(f"/v1/jobs/{job.id}").json()
    assert body["status"] == "succeeded" and "labels_tif" in body["outputs"]
    assert "reduce_seconds" not in body["outputs"]
    r = api.client.get(f"/v1/jobs/{job.id}/results")
    assert r.status_code == 200
    assert r.json()["fractions"] == FRACTIONS
    assert r.json()["inference_notes"] == []  # a document from before rows recorded it
    files = r.json()["files"]
    assert sorted(files) == sorted(OUTPUT_FILES)
    for name, url in files.items():
        assert url == f"http://testserver/v1/jobs/{job.id}/files/{name}"
        got = api.client.get(url)
        assert got.status_code == 200 and got.content == contents[name], name
    assert api.client.get(files["labels.tif"]).headers["content-type"] == "image/tiff"
    assert api.client.get(files["preview.png"]).headers["content-type"] == "image/png"
    csv = api.client.get(f"/v1/jobs/{job.id}/results.csv")
    assert csv.status_code == 200 and csv.text == CSV
    assert csv.headers["content-type"].startswith("text/csv")


@pytest.mark.parametrize("name", ["source.tif", "rows", "..%2F..%2Fpelletseg.db", "labels.tif.tmp"])
def test_only_output_files_are_served(api, name):
    job, _ = succeeded_job(api)
    r = api.client.get(f"/v1/jobs/{job.id}/files/{name}")
    assert r.status_code == 404
    assert b"SQLite format" not in r.content


def test_files_need_auth(api):
    job, _ = succeeded_job(api)
    r = api.client.get(f"/v1/jobs/{job.id}/files/labels.tif", headers={"Authorization": ""})
    assert r.status_code == 401


def test_results_on_s3_are_presigned_urls(tmp_path, s3_bucket):
    api = make_api(make_settings(tmp_path, default_model=MODEL,
                                 storage_url=f"s3://{s3_bucket}/pelletseg"))
    job, contents = succeeded_job(api)
    files = api.client.get(f"/v1/jobs/{job.id}/results").json()["files"]
    assert sorted(files) == sorted(OUTPUT_FILES)
    url = files["overlay.tif"]
    assert "Signature=" in url or "X-Amz-Signature=" in url
    assert httpx.get(url).content == contents["overlay.tif"]  # no API key: the URL is signed
    streamed = api.client.get(f"/v1/jobs/{job.id}/files/fractions.csv")
    assert streamed.status_code == 200 and streamed.text == CSV  # non-local store: streamed


def test_results_say_how_the_rows_were_computed_in_words(api):
    """GET /results words fractions.json's ``inference`` groups (core.inference_lines) for the
    dashboard's inference note; the document itself is served unchanged."""
    job, _ = succeeded_job(api)
    groups = [{"runtime": "openvino", "device": "cpu", "precision": "bf16", "f32_convs": 9,
               "tta": "none", "rows": [0]},
              {"runtime": "torch", "device": "cuda", "precision": "f16", "f32_convs": 0,
               "tta": "flips", "rows": [1]}]
    doc = {**FRACTIONS, "inference": groups}
    BlobStore(api.settings.resolved_storage_url).put_bytes(
        output_key(job.id, "fractions.json"), json.dumps(doc).encode())
    body = api.client.get(f"/v1/jobs/{job.id}/results").json()
    assert body["fractions"] == doc
    assert body["inference_notes"] == [
        "computed with rows 0: openvino on cpu, bfloat16 (first 9 convolutions float32)",
        "computed with rows 1: torch on cuda, float16, test-time flips"]
