"""Confidence outputs of a job: a strip per row beside its label checkpoint, stitched by the
reducer into a pyramidal confidence.tif, summarised in confidence.json; jobs without
confidence strips still succeed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pyvips

from core.geometry import TileGeometry
from core.states import JobStatus
from imaging.ome import pyramid_levels
from models.package import ClassInfo
from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK
from storage.blobs.layout import (
    CONFIDENCE,
    CONFIDENCE_JSON,
    LABELS,
    confidence_counts_key,
    confidence_row_key,
    output_key,
    row_key,
)
from submission import SubmissionService
from tests.worker.conftest import read_tiff
from worker.stages.confidence import (
    confidence_counts,
    confidence_document,
    counts_from_bytes,
    counts_to_bytes,
)
from worker.stages.planning import plan_job
from worker.stages.reducing import reduce_job
from worker.stages.segmenting import segment_row, segmenter_for

CLASSES3 = [ClassInfo(index=i, name=n, rgb=(i, i, i), label_value=i)
            for i, n in enumerate(["a", "b", "c"])]


def _run(ctx, source):
    spec = SubmissionService(ctx.settings).build_spec(str(source))
    job = ctx.table.jobs.create(spec)
    ctx.sent.append((PLAN_TASK, job.id))
    while ctx.sent:
        task, *args = ctx.sent.pop(0)
        {PLAN_TASK: plan_job, ROW_TASK: segment_row, REDUCE_TASK: reduce_job}[task](ctx, *args)
    return ctx.table.jobs.get(job.id)


def test_confidence_document_from_counts():
    counts = np.zeros((3, 256), np.int64)
    counts[0, 255] = 6      # class a: sure
    counts[0, 127] = 2      # class a: p just below 0.5 -> low
    counts[1, 128] = 4      # class b: p = 0.502 -> not low
    doc = confidence_document("j", counts, CLASSES3)
    a, b, c = doc["classes"]
    assert (a["pixels"], a["low_confidence_pixels"], a["low_confidence_percent"]) == (8, 2, 25.0)
    assert a["mean_confidence"] == pytest.approx((6 + 2 * 127 / 255) / 8, abs=1e-4)
    assert (b["low_confidence_pixels"], b["low_confidence_percent"]) == (0, 0.0)
    assert c == {"index": 2, "name": "c", "pixels": 0, "low_confidence_pixels": 0,
                 "low_confidence_percent": 0.0, "mean_confidence": None}
    assert doc["pixels_total"] == 12 and doc["low_confidence_pixels"] == 2
    assert doc["low_confidence_percent"] == pytest.approx(100 * 2 / 12, abs=1e-3)
    assert doc["histogram"]["pixels"] == [0, 0, 0, 0, 2, 4, 0, 0, 0, 6]
    assert len(doc["histogram"]["bin_edges"]) == 11
    with pytest.raises(ValueError, match=r"\(3, 256\)"):
        confidence_document("j", counts[:2], CLASSES3)


def test_confidence_counts_checks_its_strips():
    labels = np.array([[0, 1], [2, 2]], np.uint8)
    conf = np.array([[10, 200], [200, 255]], np.uint8)
    counts = confidence_counts(labels, conf, 3)
    assert counts.sum() == 4 and counts[2, 200] == 1 and counts[0, 10] == 1
    with pytest.raises(ValueError, match="shape"):
        confidence_counts(labels, conf[:1], 3)
    with pytest.raises(ValueError, match="outside"):
        confidence_counts(labels, conf, 2)


def test_job_writes_a_confidence_pyramid_and_summary(stack, micrograph):
    done = _run(stack, micrograph)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.outputs["confidence_tif"] == output_key(done.id, CONFIDENCE)
    rows = stack.table.rows.list(done.id)
    strips = [read_tiff(stack.local_blob(confidence_row_key(done.id, r.index))) for r in rows]
    conf = read_tiff(stack.local_blob(output_key(done.id, CONFIDENCE)))
    labels = read_tiff(stack.local_blob(output_key(done.id, LABELS)))
    assert conf.shape == labels.shape == (500, 700)
    np.testing.assert_array_equal(conf, np.concatenate(strips))
    # the row strips hold what the worker's segmenter (its runtime too) computes for the
    # whole image
    seg = segmenter_for(stack, done)
    image = pyvips.Image.new_from_file(str(micrograph)).numpy()[..., :3]
    ref_labels, ref_conf = seg.segment_array(image, TileGeometry(128, 16), batch_size=8,
                                             with_confidence=True)
    np.testing.assert_array_equal(ref_labels, labels)
    np.testing.assert_array_equal(ref_conf, conf)
    # an OME-TIFF like labels.tif: valid OME-XML, SubIFD levels each halving the one above
    path = stack.local_blob(output_key(done.id, CONFIDENCE))
    tifffile = pytest.importorskip("tifffile")
    ome_types = pytest.importorskip("ome_types")
    pytest.importorskip("xmlschema")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)
    pixels = ome.images[0].pixels
    assert (ome.images[0].name, pixels.size_x, pixels.size_y, pixels.size_c,
            pixels.type.value) == ("confidence", 700, 500, 1, "uint8")
    levels = pyramid_levels(path)
    assert len(levels) >= 2
    for factor, level in levels:
        assert (level.height, level.width, level.bands, level.format) == \
            (500 // factor, 700 // factor, 1, "uchar")
    assert abs(float(levels[1][1].avg()) - float(conf.mean())) < 2.0  # mean-shrunk
    doc = json.loads(stack.blobs.get_bytes(output_key(done.id, CONFIDENCE_JSON)))
    assert doc["pixels_total"] == 700 * 500
    counts = np.bincount(labels.ravel(), minlength=3)
    assert [c["pixels"] for c in doc["classes"]] == counts.tolist()
    for c in doc["classes"]:
        mask = labels == c["index"]
        assert c["low_confidence_pixels"] == int((conf[mask] < 128).sum())
    assert doc["mean_confidence"] == pytest.approx(conf.mean() / 255, abs=1e-4)
    assert sum(doc["histogram"]["pixels"]) == 700 * 500


def test_a_job_whose_rows_have_no_confidence_still_succeeds(stack, micrograph):
    spec = SubmissionService(stack.settings).build_spec(str(micrograph))
    job = stack.table.jobs.create(spec)
    plan_job(stack, job.id)
    n = len(stack.table.rows.list(job.id))
    for i in range(n):  # rows checkpointed before confidence existed
        assert segment_row(stack, job.id, i) == "done"
        assert stack.blobs.exists(row_key(job.id, i))
        stack.blobs.delete(confidence_row_key(job.id, i))
    reduce_job(stack, job.id)
    done = stack.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert "confidence_tif" not in done.outputs
    assert not stack.blobs.exists(output_key(job.id, CONFIDENCE))
    assert stack.blobs.exists(output_key(job.id, LABELS))


def test_a_damaged_confidence_strip_fails_the_job(stack, micrograph):
    spec = SubmissionService(stack.settings).build_spec(str(micrograph))
    job = stack.table.jobs.create(spec)
    plan_job(stack, job.id)
    for i in range(len(stack.table.rows.list(job.id))):
        segment_row(stack, job.id, i)
    stack.blobs.put_bytes(confidence_row_key(job.id, 1), b"not a tiff")
    reduce_job(stack, job.id)
    done = stack.table.jobs.get(job.id)
    assert done.status == JobStatus.FAILED and "confidence" in done.error


def test_count_tables_round_trip_and_refuse_damage():
    counts = np.arange(3 * 256, dtype=np.int64).reshape(3, 256)
    data = counts_to_bytes(counts)
    assert data == counts_to_bytes(counts.astype(np.int32))  # same bytes for the same counts
    np.testing.assert_array_equal(counts_from_bytes(data, 3), counts)
    for bad, n in ((data[:40], 3), (b"junk", 3), (data, 4),
                   (counts_to_bytes(-counts), 3)):
        with pytest.raises(ValueError, match="confidence count table"):
            counts_from_bytes(bad, n)


def test_rows_store_count_tables_and_the_reducer_recounts_missing_ones(stack, micrograph):
    spec = SubmissionService(stack.settings).build_spec(str(micrograph))
    job = stack.table.jobs.create(spec)
    plan_job(stack, job.id)
    rows = stack.table.rows.list(job.id)
    assert len(rows) >= 3
    for r in rows:
        assert segment_row(stack, job.id, r.index) == "done"
        # each row's table counts its own two strips
        table = counts_from_bytes(stack.blobs.get_bytes(confidence_counts_key(job.id, r.index)), 3)
        expected = confidence_counts(read_tiff(stack.local_blob(row_key(job.id, r.index))),
                                     read_tiff(stack.local_blob(confidence_row_key(job.id,
                                                                                   r.index))), 3)
        np.testing.assert_array_equal(table, expected)
    # a row checkpointed before the tables existed, and a damaged table: both recounted
    stack.blobs.delete(confidence_counts_key(job.id, 0))
    stack.blobs.put_bytes(confidence_counts_key(job.id, 1), b"not a table")
    reduce_job(stack, job.id)
    done = stack.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    doc = json.loads(stack.blobs.get_bytes(output_key(job.id, CONFIDENCE_JSON)))
    labels = read_tiff(stack.local_blob(output_key(job.id, LABELS)))
    conf = read_tiff(stack.local_blob(output_key(job.id, CONFIDENCE)))
    assert doc == confidence_document(job.id, confidence_counts(labels, conf, 3),
                                      stack.models.meta(job.model_name, job.model_version).classes)
