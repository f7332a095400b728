"""Microstructure in the row -> reducer flow (worker/stages/measuring.py) on a real stack: the
planner resolves the pixel size; each row stores its partial beside its checkpoint; the
reducer's microstructure equals a whole-map analysis of the stitched labels, recomputes missing
or unreadable partials, and a resumed reduce writes identical outputs."""

from __future__ import annotations

import json
import shutil

import pytest
import pyvips
from sqlalchemy import update

from core.job_warnings import WarningCode
from core.states import JobStatus
from imaging.metadata import read_pixel_size_um
from microstructure import RowPartial, analyze_label_map, summary_lines
from models import MODEL_JSON
from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK
from storage.blobs.layout import (
    FRACTIONS_JSON,
    LABELS,
    MICROSTRUCTURE_FILES,
    MICROSTRUCTURE_JSON,
    OVERLAY,
    output_key,
    row_partial_key,
)
from submission import SubmissionService
from worker.stages.measuring import micro_classes
from worker.stages.planning import plan_job
from worker.stages.reducing import reduce_job
from worker.stages.segmenting import segment_row


@pytest.fixture(scope="module")
def small(tmp_path_factory, micrograph):
    """A 300 x 250 px crop of the micrograph (3 rows at tile 128, halo 16) as a TIFF that
    records 0.8 µm/px (12 500 px/cm)."""
    out = tmp_path_factory.mktemp("small") / "small.tif"
    pyvips.Image.new_from_file(str(micrograph)).crop(0, 0, 300, 250).tiffsave(
        str(out), xres=1250.0, yres=1250.0, resunit="cm")
    return out


def _submit(ctx, source, **opts):
    spec = SubmissionService(ctx.settings).build_spec(str(source), **opts)
    job = ctx.table.jobs.create(spec)
    ctx.sent.append((PLAN_TASK, job.id))
    return job


def _drain(ctx, job_id, stop_at_reduce=False):
    stages = {PLAN_TASK: plan_job, ROW_TASK: segment_row, REDUCE_TASK: reduce_job}
    while ctx.sent:
        task, *args = ctx.sent.pop(0)
        if stop_at_reduce and task == REDUCE_TASK:
            continue
        stages[task](ctx, *args)
    return ctx.table.jobs.get(job_id)


def _outputs(ctx, job_id) -> dict[str, bytes]:
    return {name: ctx.blobs.get_bytes(output_key(job_id, name)) for name in MICROSTRUCTURE_FILES
            if ctx.blobs.exists(output_key(job_id, name))}


@pytest.mark.parametrize(("given", "expected", "came_from"), [
    (None, 0.8, "the file's resolution tags, 12500 px/cm"), (2.5, 2.5, "the job")])
def test_planner_takes_the_jobs_pixel_size_else_the_sources(stack, small, given, expected,
                                                           came_from):
    """... and records where it came from (``outputs["pixel_size_from"]``, shown beside it)."""
    job = _submit(stack, small, pixel_size_um=given)
    plan_job(stack, job.id)
    outputs = stack.table.jobs.get(job.id).outputs
    assert outputs["pixel_size_um"] == pytest.approx(expected)
    assert outputs["pixel_size_from"] == came_from


def test_planner_without_any_pixel_size_stores_none(stack, micrograph):
    job = _submit(stack, micrograph)  # a PNG without a physical size
    plan_job(stack, job.id)
    outputs = stack.table.jobs.get(job.id).outputs
    assert "pixel_size_um" in outputs and outputs["pixel_size_um"] is None
    assert outputs["pixel_size_from"] is None


def test_a_pixel_size_unlike_the_models_is_a_warning_on_the_job_and_in_its_results(
        stack, small, tiny_package, tmp_path):
    """The planner compares the job's pixel size with the package's training pixel size
    (models.suitability): 0.8 µm/px read from the file against a model trained at 0.4 µm/px is a
    warning on the job, copied into fractions.json; the right pixel size given (a rerun's
    correction) or a model that records none gives none."""
    folder = tmp_path / "tiny" / "2"
    shutil.copytree(tiny_package, folder)
    meta = json.loads((folder / MODEL_JSON).read_text())
    (folder / MODEL_JSON).write_text(json.dumps({**meta, "version": "2", "um_per_px": 0.4}))
    stack.models.publish(folder)
    job = _submit(stack, small, model_version="2")
    done = _drain(stack, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    [warning] = done.outputs["warnings"]
    assert warning["code"] == WarningCode.PIXEL_SIZE_UNLIKE_MODEL
    assert warning["message"].startswith(
        "pixel size 0.800 µm/px is 2.0 x coarser than model tiny 2 was trained at (0.400 µm/px)")
    fractions = json.loads(stack.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert fractions["warnings"] == [warning]
    for opts in ({"model_version": "2", "pixel_size_um": 0.45}, {"model_version": "1"}):
        fine = _drain(stack, _submit(stack, small, **opts).id)
        assert fine.outputs["warnings"] == [], opts
        doc = json.loads(stack.blobs.get_bytes(output_key(fine.id, FRACTIONS_JSON)))
        assert "warnings" not in doc


def test_a_demo_model_on_an_image_not_of_its_kind_is_a_warning(stack, small, micrograph,
                                                               tiny_package, tmp_path):
    """A package whose domain is ``demo`` (the bundled model's) warns on a pellet image (API
    and dashboard users see it, not only ``pelletseg run``'s stderr), not on a job labelled
    ``demo`` nor on the shipped samples' kind (a ``nasa-ebc`` folder)."""
    folder = tmp_path / "tiny" / "3"
    shutil.copytree(tiny_package, folder)
    meta = json.loads((folder / MODEL_JSON).read_text())
    (folder / MODEL_JSON).write_text(json.dumps({**meta, "version": "3", "domain": {
        "kind": "demo", "images": "SEM coatings", "dataset": "nasa-ebc"}}))
    stack.models.publish(folder)
    job = _submit(stack, small, model_version="3")
    plan_job(stack, job.id)
    [warning] = stack.table.jobs.get(job.id).outputs["warnings"]
    assert warning["code"] == WarningCode.DEMO_MODEL
    assert warning["message"].startswith("tiny is the bundled demo model, trained on SEM coatings")
    ebc = tmp_path / "nasa-ebc" / "sample.png"
    ebc.parent.mkdir()
    shutil.copy(micrograph, ebc)
    for source, labels in ((small, {"demo": True}), (ebc, {})):
        quiet = _submit(stack, source, model_version="3", labels=labels)
        plan_job(stack, quiet.id)
        assert stack.table.jobs.get(quiet.id).outputs["warnings"] == [], source


def test_a_stack_read_in_part_is_a_warning(stack, micrograph, tmp_path):
    """A TIFF of three same-size pages (e.g. an ImageJ stack of the R, G and B channels):
    the job reads page 0 and warns that the other two were left out."""
    import tifffile

    grey = pyvips.Image.new_from_file(str(micrograph)).numpy()
    grey = grey if grey.ndim == 2 else grey[..., 0]
    source = tmp_path / "channels.tif"
    with tifffile.TiffWriter(source) as tw:
        for _ in range(3):
            tw.write(grey[:150, :200])
    job = _submit(stack, source)
    plan_job(stack, job.id)
    [warning] = stack.table.jobs.get(job.id).outputs["warnings"]
    assert warning["code"] == WarningCode.PLANES_LEFT_OUT
    assert warning["message"].startswith(
        "the file holds 3 images of this size (pages); the job read only the first")


def test_an_orientation_the_outputs_do_not_follow_is_a_warning(stack, micrograph, tmp_path):
    """A JPEG whose EXIF asks viewers to turn it 90° clockwise (a camera held on its side):
    the job segments it as stored, as without the tag, and says so."""
    turned = pyvips.Image.new_from_file(str(micrograph)).crop(0, 0, 200, 150).copy()
    plain = tmp_path / "plain.jpg"
    turned.jpegsave(str(plain))
    turned.set_type(pyvips.GValue.gint_type, "orientation", 6)
    source = tmp_path / "side.jpg"
    turned.jpegsave(str(source))
    jobs = [_submit(stack, path) for path in (source, plain)]
    for job in jobs:
        plan_job(stack, job.id)
    warned, quiet = (stack.table.jobs.get(job.id) for job in jobs)
    [warning] = warned.outputs["warnings"]
    assert quiet.outputs["warnings"] == []
    assert warning["code"] == WarningCode.ORIENTATION_NOT_APPLIED
    assert warning["message"].startswith("the file asks viewers to show it turned by 90° "
                                         "clockwise (EXIF orientation 6); the job segmented "
                                         "the pixels as stored"), warning["message"]
    assert "vips autorot IN OUT" in warning["message"]
    assert (warned.width, warned.height) == (quiet.width, quiet.height) == (200, 150)


def test_pixels_recorded_not_square_are_a_warning_and_no_pixel_size(stack, micrograph, tmp_path):
    source = tmp_path / "anisotropic.tif"
    pyvips.Image.new_from_file(str(micrograph)).crop(0, 0, 200, 150).tiffsave(
        str(source), xres=1250.0, yres=1000.0, resunit="cm")  # 0.8 x 1.0 µm
    job = _submit(stack, source)
    plan_job(stack, job.id)
    outputs = stack.table.jobs.get(job.id).outputs
    assert outputs["pixel_size_um"] is None
    [warning] = outputs["warnings"]
    assert warning["code"] == WarningCode.PIXELS_NOT_SQUARE
    assert "0.8 x 1 µm, not square" in warning["message"] and "--pixel-size-um" in warning["message"]


def test_a_job_reads_the_scene_it_is_given_and_is_refused_without_one(stack, micrograph,
                                                                         tmp_path):
    """An OME-TIFF of a thumbnail and two scenes (one per pellet): a job without a scene fails
    at planning naming the scenes and the option; a job given scene 2 segments that image at
    its own size and pixel size, and its rerun keeps the scene."""
    import numpy as np
    import tifffile

    pixels = pyvips.Image.new_from_file(str(micrograph)).numpy()
    grey = pixels if pixels.ndim == 2 else pixels[..., 0]
    source = tmp_path / "mount.ome.tif"
    with tifffile.TiffWriter(source, ome=True) as tw:
        tw.write(np.ascontiguousarray(grey[:30, :40]), metadata={"axes": "YX"})
        for (h, w), size in (((250, 300), 0.5), ((220, 330), 0.75)):
            tw.write(np.ascontiguousarray(grey[:h, :w]),
                     metadata={"axes": "YX", "PhysicalSizeX": size, "PhysicalSizeY": size})
    refused = _drain(stack, _submit(stack, source).id)
    assert refused.status == JobStatus.FAILED
    assert "mount.ome.tif: an OME-TIFF of 2 images of similar size" in refused.error
    assert "(one of 1, 2: --scene N, scene in the API)" in refused.error
    assert refused.outputs == {"scenes": [1, 2]}  # what a rerun may be given
    job = _submit(stack, source, scene=2)
    assert job.spec["scene"] == 2 and job.spec["spec_version"] == 6
    done = _drain(stack, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert (done.width, done.height, done.outputs["pixel_size_um"]) == (330, 220, 0.75)
    fractions = json.loads(stack.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert fractions["pixels_total"] == 330 * 220
    labels = pyvips.Image.new_from_file(str(stack.local_blob(output_key(job.id, LABELS))))
    assert (labels.width, labels.height) == (330, 220)
    again = SubmissionService(stack.settings, table=stack.table).rerun(refused.id, scene=1)
    assert again.spec["scene"] == 1
    assert SubmissionService(stack.settings, table=stack.table).rerun(
        job.id).spec["scene"] == 2  # kept


def test_job_microstructure_is_exact_and_a_resumed_reduce_is_identical(stack, small, tmp_path):
    job = _submit(stack, small)
    running = _drain(stack, job.id, stop_at_reduce=True)
    assert running.status == JobStatus.REDUCING
    rows = stack.table.rows.list(job.id)
    assert len(rows) == 3
    # each row stored its partial beside its checkpoint, at its own y0
    parts = [RowPartial.from_bytes(stack.blobs.get_bytes(row_partial_key(job.id, r.index)))
             for r in rows]
    assert [p.y0 for p in parts] == [r.y0 for r in rows]
    # a row done before partials existed, and a partial of another version / damaged
    stack.blobs.delete(row_partial_key(job.id, 1))
    stack.blobs.put_bytes(row_partial_key(job.id, 2), b"not a partial")
    assert reduce_job(stack, job.id) is not None
    done = stack.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    first = _outputs(stack, job.id)
    report = json.loads(first[MICROSTRUCTURE_JSON])
    assert report["pixel_size_um"] == pytest.approx(0.8)
    assert report["pixel_size_from"] == "the file's resolution tags, 12500 px/cm"
    assert summary_lines(report)[0] == ("pixel size: 0.8 µm/px, from the file's resolution "
                                        "tags, 12500 px/cm")
    assert isinstance(report["pellets"], list)
    assert set(report["size_distributions"]) == {"background", "oxide", "crack"}
    for d in report["size_distributions"].values():
        assert {"count", "d10_um", "d50_um", "d90_um"} <= set(d)
    for picture in (LABELS, OVERLAY):  # the label map and overlay record it too
        assert read_pixel_size_um(stack.local_blob(output_key(job.id, picture))) == pytest.approx(
            (0.8, 0.8))
    fractions = json.loads(stack.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert fractions["pixel_size_um"] == pytest.approx(0.8)
    assert RowPartial.from_bytes(stack.blobs.get_bytes(row_partial_key(job.id, 2))).y0 == rows[2].y0
    # the distributed result equals one analysis of the stitched label map in other strips
    pkg = stack.models.meta(done.model_name, done.model_version)
    whole = analyze_label_map(stack.local_blob(output_key(job.id, LABELS)), micro_classes(pkg),
                              pixel_size_um=0.8, out_dir=tmp_path / "whole", rows_height=37)
    assert report.pop("source") == {"job_id": job.id, "model": {
        "name": "tiny", "version": "1", "sha256": done.model_sha256}}
    assert whole.pop("source") == {"labels": "labels.tif"}
    assert report.pop("pixel_size_from") == "the file's resolution tags, 12500 px/cm"
    assert "pixel_size_from" not in whole  # a label map's analysis is given its size
    assert whole == report
    # the reducer crashed after writing (job failed), then is resumed: same bytes
    with stack.table.jobs._tx() as s:
        from storage.jobtable.tables import Job

        s.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.FAILED.value))
    for r in rows:
        stack.blobs.delete(row_partial_key(job.id, r.index))
    assert stack.table.jobs.transition(job.id, JobStatus.REDUCING)  # what resume does
    reduce_job(stack, job.id)
    assert stack.table.jobs.get(job.id).status == JobStatus.SUCCEEDED
    assert _outputs(stack, job.id) == first
