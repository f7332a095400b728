"""The client commands against a live API (uvicorn in a thread): uploads interrupted and
resumed from the parts that arrived (local store and S3 on a moto server), submit, jobs,
status, cancel, resume --api, results --out."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from cli.client import ApiClient, ClientError
from cli.main import main
from cli.uploading import UploadLedger, upload_file
from core.spec import JobSpec
from core.states import JobStatus
from storage.blobs.layout import FRACTIONS_JSON, MICROSTRUCTURE_JSON, OUTPUT_FILES, output_key
from storage.blobs.store import BlobStore
from tests.api.conftest import MODEL, drain_tasks, make_api, make_settings
from tests.api.live import live_server

MIB = 1024 * 1024
PART = 5 * MIB


class FlakyTransport(httpx.HTTPTransport):
    """Counts PUTs; after ``fail_after`` of them, every PUT fails like a broken network."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.fail_after, self.puts = fail_after, 0

    def handle_request(self, request):
        if request.method == "PUT":
            if self.fail_after is not None and self.puts >= self.fail_after:
                raise httpx.ConnectError("network unreachable", request=request)
            self.puts += 1
        return super().handle_request(request)


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "pellet 9.tif"
    path.write_bytes(os.urandom(3 * PART + 1000))
    return path


def _interrupted_then_resumed(settings, key, base, big_file, tmp_path, s3: bool):
    ledger = UploadLedger(tmp_path / "ledger")
    flaky = FlakyTransport(fail_after=2)
    kwargs = {"storage_transport": flaky} if s3 else {"transport": flaky}
    seen = []
    with ApiClient(base, key, **kwargs) as client, pytest.raises(ClientError, match="network"):
        upload_file(client, big_file, ledger, part_size=PART, concurrency=1, attempts=1,
                    progress=lambda total, done: seen.append((total, done)) or (lambda n: None))
    assert seen == [(big_file.stat().st_size, 0)]
    upload_id = ledger.find(base, big_file)
    with ApiClient(base, key) as client:
        state = client.upload(upload_id)
    assert [p["number"] for p in state["parts_uploaded"]] == [1, 2]
    # A new process: the ledger leads it to the same upload; only parts 3 and 4 are sent.
    counting = FlakyTransport()
    kwargs = {"storage_transport": counting} if s3 else {"transport": counting}
    seen.clear()
    with ApiClient(base, key, **kwargs) as client:
        done = upload_file(client, big_file, ledger, part_size=PART, concurrency=2,
                           progress=lambda total, done: seen.append((total, done))
                           or (lambda n: None))
    assert counting.puts == 2 and seen == [(big_file.stat().st_size, 2 * PART)]
    assert done["id"] == upload_id and done["complete"]
    data = BlobStore(settings.resolved_storage_url).get_bytes(done["key"])
    assert hashlib.sha256(data).digest() == hashlib.sha256(big_file.read_bytes()).digest()


def test_local_upload_resumes_after_a_broken_connection(tmp_path, big_file):
    api = make_api(make_settings(tmp_path, default_model=MODEL))
    with live_server(api.client.app) as base:
        _interrupted_then_resumed(api.settings, api.key, base, big_file, tmp_path, s3=False)


def test_s3_upload_resumes_after_a_broken_connection(tmp_path, big_file, s3_bucket):
    api = make_api(make_settings(tmp_path, default_model=MODEL,
                                 storage_url=f"s3://{s3_bucket}/store"))
    with live_server(api.client.app) as base:
        _interrupted_then_resumed(api.settings, api.key, base, big_file, tmp_path, s3=True)


def test_a_changed_file_starts_a_new_upload(tmp_path):
    api = make_api(make_settings(tmp_path, default_model=MODEL))
    path = tmp_path / "a.tif"
    path.write_bytes(b"first")
    ledger = UploadLedger(tmp_path / "ledger")
    with live_server(api.client.app) as base, ApiClient(base, api.key) as client:
        first = upload_file(client, path, ledger)
        path.write_bytes(b"second!")
        second = upload_file(client, path, ledger)
    assert first["id"] != second["id"] and second["size"] == 7


def _microstructure_json() -> bytes:
    """microstructure.json of a 40 x 40 px section: one pellet of 20 x 20 px (hematite, one
    2 x 2 px pore) in epoxy, at 2 µm/px (computed, through the rows, by microstructure)."""
    from microstructure import (
        classes_from_mappings,
        merge_partials,
        render_outputs,
        row_partial,
    )

    classes = classes_from_mappings([{"name": "epoxy", "value": 0, "role": "mount"},
                                     {"name": "pore", "value": 1, "role": "pore"},
                                     {"name": "hematite", "value": 2}])
    labels = np.zeros((40, 40), np.uint8)
    labels[10:30, 10:30] = 2
    labels[18:20, 18:20] = 1
    parts = [row_partial(labels[y:y + 16], y0=y, image_shape=(40, 40), classes=classes)
             for y in range(0, 40, 16)]
    report = merge_partials(parts, classes=classes, pixel_size_um=2.0)
    return render_outputs(report)["microstructure.json"]


def _succeeded_job(api) -> str:
    """A job that went through every state, with its outputs in the store."""
    r = api.client.post("/v1/jobs", json={"source_url": "s3://b/p.tif"})
    job_id = r.json()["id"]
    blobs = BlobStore(api.settings.resolved_storage_url)
    doc = {"job_id": job_id, "model": {"name": MODEL, "version": "1", "sha256": "a" * 64},
           "width": 10, "height": 10, "pixels_total": 100,
           "classes": [{"index": 0, "name": "pore", "pixels": 100, "percent": 100.0,
                        "percent_of_pellet": None}]}
    for name in OUTPUT_FILES:
        blobs.put_bytes(output_key(job_id, name), f"{name} of {job_id}".encode())
    blobs.put_bytes(output_key(job_id, FRACTIONS_JSON), json.dumps(doc).encode())
    blobs.put_bytes(output_key(job_id, MICROSTRUCTURE_JSON), _microstructure_json())
    confidence = {"job_id": job_id, "low_below": 0.5, "pixels_total": 100,
                  "mean_confidence": 0.8, "low_confidence_percent": 7.0,
                  "classes": [{"index": 0, "name": "pore", "pixels": 100,
                               "low_confidence_pixels": 7, "low_confidence_percent": 7.0,
                               "mean_confidence": 0.8}]}
    blobs.put_bytes(output_key(job_id, "confidence.json"), json.dumps(confidence).encode())
    for status in (JobStatus.PLANNING, JobStatus.RUNNING, JobStatus.REDUCING,
                   JobStatus.SUCCEEDED):
        assert api.table.jobs.transition(job_id, status)
    return job_id


def test_client_commands(tmp_path, monkeypatch):
    api = make_api(make_settings(tmp_path, default_model=MODEL))
    image = tmp_path / "P-1.tif"
    image.write_bytes(b"II*\x00" + b"not really a tiff")  # TIFF magic: submit checks only that
    runner = CliRunner()
    with live_server(api.client.app) as base:
        monkeypatch.setenv("PELLETSEG_API_URL", base)
        monkeypatch.setenv("PELLETSEG_API_KEY", api.key)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the upload ledger
        res = runner.invoke(main, ["submit", str(image), "--label", "sample=P-1",
                                   "--pixel-size-um", "0.4", "--precision", "fp32",
                                   "--significant-bits", "12"])
        assert res.exit_code == 0, res.output
        job = api.table.jobs.list()[0]
        assert job.id in res.output and job.spec["labels"] == {"sample": "P-1"}
        assert job.spec["pixel_size_um"] == 0.4
        assert job.spec["precision"] == "fp32" and job.spec["significant_bits"] == 12
        assert job.source_url.endswith("/P-1.tif")
        assert (tmp_path / "config" / "pelletseg" / "uploads").is_dir()
        assert not list((tmp_path / "config" / "pelletseg" / "uploads").glob("*.json"))
        res = runner.invoke(main, ["submit", str(image), "s3://b/other.tif"])
        assert res.exit_code == 0 and "batch" in res.output, res.output
        assert len({j.batch_id for j in api.table.jobs.list()[:2]}) == 1
        batch_id = api.table.jobs.list()[0].batch_id
        assert f"pelletseg results --batch {batch_id}" in " ".join(res.output.split())
        assert f"on the dashboard: {base}/?batch={batch_id})" in res.output
        res = runner.invoke(main, ["results", "--batch", batch_id])
        assert res.exit_code == 0, res.output
        lines = list(csv.DictReader(io.StringIO(res.output)))
        assert [x["status"] for x in lines] == ["queued", "queued"]
        assert lines[1]["source"] == "s3://b/other.tif" and lines[0]["source"].endswith("P-1.tif")
        res = runner.invoke(main, ["results", "--batch", batch_id, "--out", str(tmp_path / "b")])
        assert res.exit_code == 0, res.output
        saved = tmp_path / "b" / f"batch-{batch_id}-results.csv"
        assert saved.read_text(encoding="utf-8").splitlines()[0].startswith("job_id,source,")
        res = runner.invoke(main, ["results"])
        assert res.exit_code == 2 and "give a JOB_ID or --batch ID" in res.output
        res = runner.invoke(main, ["results", "--batch", "nope"])
        assert res.exit_code == 2 and "batch nope does not exist" in res.output
        assert not any("precision" in j.spec for j in api.table.jobs.list()[:2])
        folder = tmp_path / "sections"  # a folder: its images, one batch
        folder.mkdir()
        for name in ("P-4.tif", "P-3.tif", "notes.txt"):
            (folder / name).write_bytes(image.read_bytes())
        res = runner.invoke(main, ["submit", str(folder)])
        assert res.exit_code == 0 and "2 jobs" in res.output, res.output
        newest = api.table.jobs.list()[:2]
        assert sorted(j.source_url.rsplit("/", 1)[1] for j in newest) == ["P-3.tif", "P-4.tif"]
        assert newest[0].batch_id == newest[1].batch_id != batch_id
        for j in newest:  # e.g. their source vanished: resume the batch once it is back
            assert api.table.jobs.transition(j.id, JobStatus.FAILED, error="gone")
        drain_tasks(api.settings)
        res = runner.invoke(main, ["resume", "--batch", newest[0].batch_id])
        assert res.exit_code == 0 and "2 of 2 jobs resumed" in res.output, res.output
        assert sorted(drain_tasks(api.settings)) == sorted(
            ("pelletseg.plan_job", j.id) for j in newest)
        res = runner.invoke(main, ["resume", "--batch", newest[0].batch_id])
        assert res.exit_code == 2 and "HTTP 409" in res.output
        assert "no failed or interrupted job to resume (2 queued)" in res.output
        res = runner.invoke(main, ["cancel", "--batch", newest[0].batch_id])
        assert res.exit_code == 0, res.output
        assert sorted(res.output.split()) == sorted(
            [w for j in newest for w in ("job", j.id, "cancelled")])
        res = runner.invoke(main, ["watch", "--batch", newest[0].batch_id])  # a bar each
        assert res.exit_code == 1 and res.output.count("cancelled") >= 2, res.output
        assert all(f"job {j.id} cancelled" in res.output for j in newest)
        assert "None" not in res.output  # a cancelled job has no error to show
        res = runner.invoke(main, ["watch", "--batch", "nope"])
        assert res.exit_code == 2 and "batch nope does not exist" in res.output
        res = runner.invoke(main, ["cancel"])
        assert res.exit_code == 2 and "give a JOB_ID or --batch ID" in res.output
        res = runner.invoke(main, ["submit", str(image), "--precision", "fp64"])
        assert res.exit_code == 2 and "'fp64' is not one of" in res.output, res.output
        res = runner.invoke(main, ["submit", str(image), "--significant-bits", "17"])
        assert res.exit_code == 2 and "not in the range 8<=x<=16" in res.output, res.output
        res = runner.invoke(main, ["jobs", "--label", "sample=P-1"])
        assert res.exit_code == 0 and job.id in res.output and "queued" in res.output
        res = runner.invoke(main, ["status", job.id])
        assert res.exit_code == 0 and "queued" in res.output and "P-1.tif" in res.output
        assert "scene" not in res.output and "warning" not in res.output
        warned = api.table.jobs.create(JobSpec(tile_size=1024, halo=128, model=MODEL,
                                               source_url="s3://lab/mount.ome.tif", scene=2))
        api.table.jobs.transition(warned.id, JobStatus.PLANNING)
        api.table.jobs.transition(warned.id, JobStatus.RUNNING, width=10, height=10, outputs={
            "warnings": [{"code": "pixels_not_square", "message": "the file records [x]"}]})
        res = runner.invoke(main, ["status", warned.id])
        assert "s3://lab/mount.ome.tif (scene 2)" in res.output, res.output
        assert "  warning: the file records [x]" in res.output
        api.table.jobs.transition(warned.id, JobStatus.FAILED, error="boom")
        res = runner.invoke(main, ["watch", warned.id])  # its warnings once, then its end
        assert res.exit_code == 1 and res.output.count("warning: the file records [x]") == 1
        res = runner.invoke(main, ["cancel", job.id])
        assert res.exit_code == 0 and "cancelled" in res.output
        res = runner.invoke(main, ["cancel", job.id])
        assert res.exit_code == 2 and "HTTP 409" in res.output and "only a job that has not" \
            in res.output
        drain_tasks(api.settings)
        res = runner.invoke(main, ["resume", job.id])  # PELLETSEG_API_URL: through the API
        assert res.exit_code == 0 and "queued" in res.output, res.output
        assert drain_tasks(api.settings) == [("pelletseg.plan_job", job.id)]
        done = _succeeded_job(api)
        res = runner.invoke(main, ["watch", done])
        assert res.exit_code == 0 and "pore" in res.output
        res = runner.invoke(main, ["results", done, "--out", str(tmp_path / "out")])
        assert res.exit_code == 0 and "Phase fractions" in res.output, res.output
        assert "pixel size: 2 µm/px" in res.output and "pellets: 1" in res.output
        assert "pellet 1: 0.002 mm²" in res.output  # 400 px x 4 µm²
        assert "Low confidence" in res.output and "7.00" in res.output, res.output
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
            [*OUTPUT_FILES, "confidence.json"])
        assert (tmp_path / "out" / "preview.png").read_bytes() == f"preview.png of {done}".encode()
        stored = len(BlobStore(api.settings.resolved_storage_url).list(f"jobs/{done}"))
        res = runner.invoke(main, ["delete", done])  # its outputs downloaded: delete it
        assert res.exit_code == 0, res.output
        assert re.fullmatch(rf"job {done} deleted: {stored} objects, \d+\.\d MB removed\n",
                            res.output) and stored > 0
        assert done not in runner.invoke(main, ["jobs"]).output
        assert done in runner.invoke(main, ["jobs", "--status", "deleted"]).output
        res = runner.invoke(main, ["rerun", done,  # PELLETSEG_API_URL: through the API
                                   "--pixel-size-um", "0.3", "--significant-bits", "14"])
        assert res.exit_code == 0, res.output
        (rerun,) = [j for j in api.table.jobs.list()
                    if (j.spec["labels"] or {}).get("rerun_of") == done]
        assert f"job {rerun.id} queued" in res.output and rerun.source_url == \
            api.table.jobs.get(done).source_url
        assert (rerun.spec["pixel_size_um"], rerun.spec["significant_bits"]) == (0.3, 14)
        res = runner.invoke(main, ["rerun", "--batch", newest[0].batch_id, "--model", "nope"])
        assert res.exit_code == 2 and "HTTP 422" in res.output and "nope" in res.output
        res = runner.invoke(main, ["delete", "--batch", newest[0].batch_id])  # both cancelled
        assert res.exit_code == 0 and f"batch {newest[0].batch_id}: 2 jobs deleted" in res.output
        res = runner.invoke(main, ["delete", job.id])  # queued again: cancel it first
        assert res.exit_code == 2 and "HTTP 409" in res.output and "cancel it first" in res.output
        res = runner.invoke(main, ["status", "nope"])
        assert res.exit_code == 2 and "job nope does not exist" in res.output
        monkeypatch.setenv("PELLETSEG_API_KEY", "psk_wrong")
        res = runner.invoke(main, ["jobs"])
        assert res.exit_code == 2 and "invalid API key" in res.output
