"""A batch's table read from the job table and the blob store (submission/reports.py): jobs in
submission order, documents only of succeeded jobs, a job reduced before microstructure
existed, an unknown batch."""

from __future__ import annotations

import csv
import io
import json

import pytest

from core.settings import Settings
from core.spec import JobSpec
from core.states import JobStatus
from storage.blobs import BlobStore, output_key
from storage.errors import NotFoundError
from storage.jobtable import job_table
from storage.jobtable.engine import upgrade
from submission.reports import batch_table

FRACTIONS = {"width": 10, "height": 2, "pixel_size_um": None,
             "classes": [{"index": 0, "name": "pore", "percent": 25.0},
                         {"index": 1, "name": "hematite", "percent": 75.0}]}


def test_batch_table_reads_each_jobs_documents_in_submission_order(tmp_path):
    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    table, blobs = job_table(settings), BlobStore(settings.resolved_storage_url)
    ids = [table.jobs.create(JobSpec(source_url=f"s3://b/{i}.tif", model="m", tile_size=256,
                                     halo=32, labels={"n": i}), batch_id="B").id
           for i in range(3)]
    table.jobs.create(JobSpec(source_url="s3://b/other.tif", model="m", tile_size=256, halo=32))
    for status in (JobStatus.PLANNING, JobStatus.RUNNING, JobStatus.REDUCING,
                   JobStatus.SUCCEEDED):
        assert table.jobs.transition(ids[1], status)
    blobs.put_bytes(output_key(ids[1], "fractions.json"), json.dumps(FRACTIONS).encode())
    # the queued job 0 has a stray document: not read, since it has not succeeded
    blobs.put_bytes(output_key(ids[0], "fractions.json"), json.dumps(FRACTIONS).encode())

    lines = list(csv.DictReader(io.StringIO(batch_table(table, blobs, "B"))))
    assert [line["job_id"] for line in lines] == ids  # oldest first; the other job left out
    assert [line["label_n"] for line in lines] == ["0", "1", "2"]
    assert [line["status"] for line in lines] == ["queued", "succeeded", "queued"]
    assert lines[1]["percent_of_image_hematite"] == "75.0" and lines[1]["pellets"] == ""
    assert lines[0]["percent_of_image_hematite"] == "" and lines[0]["width_px"] == ""
    with pytest.raises(NotFoundError, match="batch nope does not exist"):
        batch_table(table, blobs, "nope")
