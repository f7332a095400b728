"""The three stages as plain functions on a real stack (SQLite, local store, tiny model):
idempotency of segment_row, checkpoint reuse, and bad input failing only its own job."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pyvips

from core.spec import JobSpec
from core.states import JobStatus, RowStatus
from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK
from storage.blobs.layout import (
    FRACTIONS_JSON,
    LABELS,
    output_key,
    row_blob_keys,
    row_key,
)
from submission import SubmissionService
from tests.worker.conftest import read_tiff
from worker.stages.planning import plan_job
from worker.stages.reducing import reduce_job
from worker.stages.segmenting import segment_row


def _submit(ctx, source, **opts):
    spec = SubmissionService(ctx.settings).build_spec(str(source), **opts)
    return ctx.table.jobs.create(spec)


def _run_all(ctx, job_id):
    """Drain ctx.sent like a broker would, one message at a time."""
    while ctx.sent:
        task, *args = ctx.sent.pop(0)
        {PLAN_TASK: plan_job, ROW_TASK: segment_row, REDUCE_TASK: reduce_job}[task](ctx, *args)
    return ctx.table.jobs.get(job_id)


def test_job_runs_and_fractions_are_exact(stack, micrograph):
    job = _submit(stack, micrograph)
    stack.sent.append((PLAN_TASK, job.id))
    done = _run_all(stack, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert (done.width, done.height) == (700, 500)
    assert done.rows_total == len(stack.table.rows.list(job.id)) == 6  # ceil(500 / 96)
    doc = json.loads(stack.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    labels = read_tiff(stack.local_blob(output_key(job.id, LABELS)))
    assert labels.shape == (500, 700)
    counts = np.bincount(labels.ravel(), minlength=3)
    assert [c["pixels"] for c in doc["classes"]] == counts.tolist()
    assert sum(c["pixels"] for c in doc["classes"]) == 700 * 500
    assert sum(c["percent"] for c in doc["classes"]) == pytest.approx(100.0)
    assert doc["model"]["name"] == "tiny" and len(doc["model"]["sha256"]) == 64
    assert doc["classes"][0]["percent_of_pellet"] is None  # background is not pellet
    # each row records how its labels were computed, and fractions.json says it for the job
    from worker.stages.segmenting import segmenter_for

    expected = segmenter_for(stack, done).inference
    assert expected["device"] == "cpu" and expected["precision"] in ("f32", "bf16")
    assert all(r.inference == expected for r in stack.table.rows.list(job.id))
    assert doc["inference"] == [{**expected, "rows": list(range(6))}]


def test_jobs_keep_the_edge_tiles_their_spec_names(stack, micrograph):
    """A job of spec version < 4 (no ``edge_tiles``: submitted before fitted edge tiles) is
    segmented with whole edge tiles, as its rows always were; a new job with fitted ones;
    each job's labels are those of its own layout, strip by strip."""
    from imaging.reading import open_image, read_rows
    from worker.stages.segmenting import segmenter_for

    new = _submit(stack, micrograph)
    stored = {k: v for k, v in new.spec.items() if k not in ("edge_tiles", "spec_version")}
    old = stack.table.jobs.create(JobSpec(**stored))
    assert old.spec["spec_version"] < 4 and new.spec["edge_tiles"] == "fitted"
    image = read_rows(open_image(micrograph, max_pixels=10**9), 0, 500)
    for job in (old, new):
        stack.sent.append((PLAN_TASK, job.id))
        done = _run_all(stack, job.id)
        assert done.status == JobStatus.SUCCEEDED, done.error
        rows = stack.table.rows.list(job.id)
        assert len(rows) == 6 and rows[-1].y1 == 500
        seg = segmenter_for(stack, done)
        fit = JobSpec.from_stored(done.spec).fit_edges
        assert fit == (job is new)
        grid = seg.grid(700, 500, fit_edges=fit)
        assert (grid.row_spans[-1].size < 128) == fit  # the last 20 px: 20 + 16 + 16 -> 64
        assert [(r.y0, r.y1) for r in rows] == grid.all_strip_bounds()
        expected = np.concatenate([
            seg.segment_strip_simple(image[slice(*grid.read_window(y0, y1))], grid, y0, y1, 1)
            for y0, y1 in grid.all_strip_bounds()])
        np.testing.assert_array_equal(read_tiff(stack.local_blob(output_key(job.id, LABELS))),
                                      expected)


def test_a_12_bit_camera_image_given_its_significant_bits_gets_the_8_bit_labels(stack, micrograph,
                                                                               tmp_path):
    """The same micrograph from a 12-bit camera, in 16 bits (v << 4 plus noise in the low bits
    a camera would fill), unsigned and signed: given ``significant_bits=12`` the job's labels
    and fractions are the 8-bit image's exactly; given nothing (a plain 16-bit TIFF says
    nothing either) the job fails saying which option to give, since by all the type's bits the
    model would see an image at 1/16 (signed: 1/8) of its brightness; given 16 (unsigned) it is
    converted so, and labelled otherwise."""
    import tifffile

    eight = pyvips.Image.new_from_file(str(micrograph)).numpy()
    low = np.random.default_rng(0).integers(0, 16, eight.shape, dtype=np.uint16)

    def run(source, status=JobStatus.SUCCEEDED, **opts):
        job = _submit(stack, source, **opts)
        stack.sent.append((PLAN_TASK, job.id))
        done = _run_all(stack, job.id)
        assert done.status == status, done.error
        if status == JobStatus.FAILED:
            return done, None, None
        doc = json.loads(stack.blobs.get_bytes(output_key(done.id, FRACTIONS_JSON)))
        return done, doc, read_tiff(stack.local_blob(output_key(done.id, LABELS)))

    ref, ref_doc, ref_labels = run(micrograph)
    assert ref.outputs["significant_bits"] is None and "significant_bits" not in ref_doc
    for dtype, kind, brightest in (("uint16", "a 16-bit", 15), ("int16", "a signed 16-bit", 31)):
        twelve = tmp_path / dtype / "camera12.tif"
        twelve.parent.mkdir()
        tifffile.imwrite(twelve, ((eight.astype(np.uint16) << 4) | low).astype(dtype))
        given, given_doc, given_labels = run(twelve, significant_bits=12)
        dark, _, _ = run(twelve, status=JobStatus.FAILED)
        assert (f"camera12.tif: {kind} image whose samples all fit in 12 bits" in dark.error
                and f"its brightest pixel {brightest} of 255" in dark.error
                and "--significant-bits N" in dark.error), dark.error
        assert dark.outputs["significant_bits_suggested"] == 12
        assert not stack.blobs.exists(output_key(dark.id, "source.tif"))
        assert stack.table.rows.list(dark.id) == []
        assert JobSpec.from_stored(given.spec).significant_bits == 12
        assert given.outputs["significant_bits"] == given_doc["significant_bits"] == 12
        np.testing.assert_array_equal(given_labels, ref_labels)
        assert given_doc["classes"] == ref_doc["classes"], dtype
    high, high_doc, high_labels = run(tmp_path / "uint16" / "camera12.tif", significant_bits=16)
    assert high.outputs["significant_bits"] == high_doc["significant_bits"] == 16
    assert not np.array_equal(high_labels, ref_labels)


def test_pixels_no_image_covers_are_labelled_as_the_mount(stack, micrograph, tmp_path):
    """A mosaic's empty areas (here fully transparent pixels of an RGBA image; a CZI's
    uncovered areas and a slide's transparent ones alike, tests/imaging/formats) are the
    model's mount class in the labels, the counts and the fractions, with confidence 255;
    every other pixel is labelled as in the same image without them."""
    rgb = pyvips.Image.new_from_file(str(micrograph)).numpy()
    rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[100:260, 150:420] = 0  # across rows and tiles
    rgba = tmp_path / "mosaic.png"
    pyvips.Image.new_from_array(np.dstack([rgb, alpha])).pngsave(str(rgba))
    opaque = tmp_path / "opaque.png"
    pyvips.Image.new_from_array(rgb).pngsave(str(opaque))

    def run(source):
        job = _submit(stack, source)
        stack.sent.append((PLAN_TASK, job.id))
        done = _run_all(stack, job.id)
        assert done.status == JobStatus.SUCCEEDED, done.error
        doc = json.loads(stack.blobs.get_bytes(output_key(done.id, FRACTIONS_JSON)))
        return done, doc, read_tiff(stack.local_blob(output_key(done.id, LABELS)))

    plain, plain_doc, plain_labels = run(opaque)
    masked, doc, labels = run(rgba)
    hole = alpha == 0
    assert plain_labels[hole].any()  # the model labels something there when it sees it
    assert masked.outputs["nodata"] and plain.outputs["nodata"] is None
    np.testing.assert_array_equal(labels, np.where(hole, 0, plain_labels))
    assert [c["pixels"] for c in doc["classes"]] == np.bincount(labels.ravel(),
                                                                minlength=3).tolist()
    assert doc["nodata_pixels"] == hole.sum() and "nodata_pixels" not in plain_doc
    confidence = read_tiff(stack.local_blob(output_key(masked.id, "confidence.tif")))
    assert (confidence[hole] == 255).all()


def test_a_mosaics_black_fill_is_labelled_as_the_mount(stack, micrograph, tmp_path):
    """A mosaic stitched without an alpha band, its missing field black, given as a tiled
    8-bit RGB TIFF (the rows read it as it is; a converted source gets its mask from
    write_model_ready, tests/imaging/formats): the fill is no-data, the mount with
    confidence 255, counted in nodata_pixels; a black pore inside is labelled by the model."""
    rgb = pyvips.Image.new_from_file(str(micrograph)).numpy()
    rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3].copy()
    rgb[260:, 430:] = 0  # the field never imaged, across rows and tiles
    rgb[60:140, 100:220] = 0  # black inside the image: not a fill
    fill = np.zeros(rgb.shape[:2], bool)
    fill[260:, 430:] = True
    source = tmp_path / "stitched.tif"
    pyvips.Image.new_from_array(rgb).tiffsave(str(source), tile=True, tile_width=256,
                                              tile_height=256, compression="deflate")
    job = _submit(stack, source)
    stack.sent.append((PLAN_TASK, job.id))
    done = _run_all(stack, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.outputs["source"] is None and done.outputs["nodata"]  # read as it is
    doc = json.loads(stack.blobs.get_bytes(output_key(done.id, FRACTIONS_JSON)))
    assert doc["nodata_pixels"] == fill.sum()
    labels = read_tiff(stack.local_blob(output_key(done.id, LABELS)))
    confidence = read_tiff(stack.local_blob(output_key(done.id, "confidence.tif")))
    assert (labels[fill] == 0).all() and (confidence[fill] == 255).all()
    assert (confidence[60:140, 100:220] < 255).any()  # the pore: the model's own labels


def test_no_data_takes_the_first_mount_class_and_nothing_without_one():
    from models.package import ClassInfo
    from worker.stages.segmenting import label_nodata_as_mount

    def classes(*roles):
        return [ClassInfo(index=i, name=f"c{i}", rgb=(0, 0, 0), label_value=i, role=role)
                for i, role in enumerate(roles)]

    nodata = np.zeros((4, 5), bool)
    nodata[1:3, 2:4] = True
    labels, confidence = np.full((4, 5), 2, np.uint8), np.full((4, 5), 90, np.uint8)
    assert label_nodata_as_mount(nodata, labels, confidence,
                                 classes("phase", "mount", "pore", "mount")) == 4
    assert (labels[nodata] == 1).all() and (labels[~nodata] == 2).all()
    assert (confidence[nodata] == 255).all() and (confidence[~nodata] == 90).all()
    kept = np.full((4, 5), 2, np.uint8)
    assert label_nodata_as_mount(nodata, kept, None, classes("phase", "pore", "phase")) == 0
    assert (kept == 2).all()


def test_reducer_logs_where_its_time_went(stack, micrograph):
    import structlog.testing

    from worker.stages.segmenting import segmenter_for

    job = _submit(stack, micrograph)
    plan_job(stack, job.id)
    with structlog.testing.capture_logs() as rows:
        for row in stack.table.rows.list(job.id):
            segment_row(stack, job.id, row.index)
    # each row names what computed it (a bf16 package's labels depend on the worker's CPU)
    runtime = segmenter_for(stack, stack.table.jobs.get(job.id)).runtime
    computed = [e for e in rows if e["event"] == "row.computed"]
    assert computed and all((e["runtime"], e["precision"], e["f32_convs"]) == (
        runtime.name, runtime.precision, runtime.f32_convs) for e in computed)
    with structlog.testing.capture_logs() as logs:
        assert reduce_job(stack, job.id) is not None
    (done,) = [e for e in logs if e["event"] == "reduce.done"]
    products = ("labels_s", "preview_s", "overlay_s", "microstructure_s", "confidence_s")
    assert all(done[k] > 0 for k in products), done
    # the pictures are written one after another beside the overlay, inside the products' time
    assert done["labels_s"] + done["preview_s"] <= done["products_s"] + 0.001
    assert done["fetch_s"] + done["products_s"] + done["store_s"] <= done["seconds"] + 0.01


def test_rows_store_source_thumbnails_and_the_preview_is_made_from_them(stack, micrograph):
    """Each row stores its source rows shrunk for the preview; at this small size the factor
    is 1, so the stitched thumbnails are the source's own pixels and the preview is the same,
    byte for byte, whether made from them or (a row's thumbnail missing) from the source."""
    from imaging.reading import open_image, read_rows
    from imaging.rendering import thumbnail_factor
    from storage.blobs.layout import PREVIEW, thumbnail_row_key

    previews = []
    for drop_one in (False, True):
        job = _submit(stack, micrograph)
        plan_job(stack, job.id)
        rows = stack.table.rows.list(job.id)
        for row in rows:
            segment_row(stack, job.id, row.index)
        stride = JobSpec.from_stored(job.spec).geometry.stride
        assert thumbnail_factor(700, 500, stride) == 1
        thumbs = [pyvips.Image.new_from_file(str(stack.local_blob(thumbnail_row_key(job.id, r.index))))
                  for r in rows]
        assert [(t.width, t.height, t.bands) for t in thumbs] == [(700, r.y1 - r.y0, 3) for r in rows]
        source = read_rows(open_image(micrograph, max_pixels=10**9), 0, 500)
        assert np.array_equal(np.concatenate([t.numpy() for t in thumbs]), source)
        if drop_one:
            stack.blobs.delete(thumbnail_row_key(job.id, rows[1].index))
        assert reduce_job(stack, job.id) is not None
        previews.append(stack.blobs.get_bytes(output_key(job.id, PREVIEW)))
    assert previews[0] == previews[1]


def test_segment_row_twice_leaves_one_checkpoint_and_counts_once(stack, micrograph):
    job = _submit(stack, micrograph)
    plan_job(stack, job.id)
    key = row_key(job.id, 0)
    assert segment_row(stack, job.id, 0) == "done"
    first = stack.blobs.get_bytes(key)
    row = stack.table.rows.get(job.id, 0)
    assert segment_row(stack, job.id, 0) == "skipped:done"
    assert stack.blobs.get_bytes(key) == first
    assert sorted(stack.blobs.list(f"jobs/{job.id}/rows")) == sorted(row_blob_keys(job.id, 0))
    again = stack.table.rows.get(job.id, 0)
    assert (again.counts, again.checksum, again.attempts) == (row.counts, row.checksum, 1)
    assert sum(row.counts) == (row.y1 - row.y0) * 700
    assert stack.table.rows.progress(job.id).done == 1


def test_checkpoint_left_by_a_dead_attempt_is_reused(stack, micrograph):
    """A worker died after writing the strip but before marking the row done."""
    job = _submit(stack, micrograph)
    plan_job(stack, job.id)
    assert segment_row(stack, job.id, 1) == "done"
    reference = stack.table.rows.get(job.id, 1)
    blob = stack.blobs.get_bytes(row_key(job.id, 1))
    # Put the row back to pending as the lease reconciler would, keeping the blob.
    with stack.table.rows._tx() as s:
        from sqlalchemy import update

        from storage.jobtable.tables import Row
        s.execute(update(Row).where(Row.job_id == job.id, Row.index == 1)
                  .values(status=RowStatus.PENDING.value, counts=None, checksum=None,
                          inference=None))
    assert segment_row(stack, job.id, 1) == "done"
    redone = stack.table.rows.get(job.id, 1)
    assert redone.checksum == reference.checksum and redone.counts == reference.counts
    assert stack.blobs.get_bytes(row_key(job.id, 1)) == blob
    # how the reused labels were computed comes from the record stored with them
    assert reference.inference and redone.inference == reference.inference


def test_a_reused_checkpoint_without_an_inference_record_is_reported_as_unknown(stack, micrograph):
    """Checkpoints from before the record existed: their rows say None, fractions.json groups
    them apart from the rows computed now."""
    from storage.blobs.layout import inference_row_key

    job = _submit(stack, micrograph)
    plan_job(stack, job.id)
    assert segment_row(stack, job.id, 0) == "done"
    with stack.table.rows._tx() as s:
        from sqlalchemy import update

        from storage.jobtable.tables import Row
        s.execute(update(Row).where(Row.job_id == job.id, Row.index == 0)
                  .values(status=RowStatus.PENDING.value, inference=None))
    stack.blobs.delete(inference_row_key(job.id, 0))
    stack.sent.clear()
    for row in stack.table.rows.list(job.id):
        assert segment_row(stack, job.id, row.index) == "done"
    assert stack.table.rows.get(job.id, 0).inference is None
    done = _run_all(stack, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    doc = json.loads(stack.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    unknown, known = doc["inference"]
    assert unknown == {"runtime": None, "device": None, "precision": None, "f32_convs": None,
                       "tta": None, "rows": [0]}
    assert known["rows"] == list(range(1, 6)) and known["device"] == "cpu"


def _bad_files(tmp_path):
    not_image = tmp_path / "notes.tif"
    not_image.write_text("these are lab notes, not a micrograph\n" * 20)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = pyvips.Image.black(400, 300, bands=3) + 90
    strip_tif = tmp_path / "full.tif"
    good.cast("uchar").tiffsave(str(strip_tif))  # strip TIFF, uncompressed
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(strip_tif.read_bytes()[: strip_tif.stat().st_size // 2])
    tiled = tmp_path / "tiled.tif"
    good.cast("uchar").tiffsave(str(tiled), tile=True, tile_width=128, tile_height=128)
    truncated_tiled = tmp_path / "truncated_tiled.tif"
    data = tiled.read_bytes()
    truncated_tiled.write_bytes(data[: len(data) * 2 // 3])
    found = {
        "not an image": (not_image, "not a readable image"),
        "zero-size": (empty, "empty (0 bytes)"),
        "truncated TIFF": (truncated, "truncated or corrupt"),
        "truncated tiled TIFF": (truncated_tiled, "truncated or corrupt"),
    }
    try:  # bfconvert -compression JPEG-2000: read as black before 2026-12-07, with no error
        import imagecodecs  # noqa: F401 - tifffile's JPEG 2000 encoder
        import tifffile
    except ImportError:
        return found
    jp2k = tmp_path / "jp2k.ome.tif"
    tifffile.imwrite(jp2k, good.cast("uchar").numpy(), photometric="rgb", ome=True,
                     compression="jpeg2000", tile=(256, 256))
    found["JPEG 2000 OME-TIFF"] = (jp2k, "compressed with JPEG2000 (TIFF compression 34712)")
    return found


@pytest.mark.parametrize("case", ["not an image", "zero-size", "truncated TIFF", "truncated tiled TIFF",
                                  "JPEG 2000 OME-TIFF"])
def test_bad_input_fails_its_job_with_a_clear_reason_and_nothing_else(stack, micrograph, tmp_path, case):
    files = _bad_files(tmp_path)
    if case not in files:
        pytest.skip("imagecodecs (a dev dependency) writes the JPEG 2000 TIFF")
    path, message = files[case]
    good = _submit(stack, micrograph)
    bad = _submit(stack, path)
    stack.sent.extend([(PLAN_TASK, bad.id), (PLAN_TASK, good.id)])
    _run_all(stack, bad.id)
    failed = stack.table.jobs.get(bad.id)
    assert failed.status == JobStatus.FAILED
    assert message in failed.error and path.name in failed.error
    assert stack.table.jobs.get(good.id).status == JobStatus.SUCCEEDED


def test_jobs_after_libvips_left_a_latin1_message_fail_and_succeed_as_they_should(stack, micrograph,
                                                                                 tmp_path):
    """A message libvips leaves in its process-wide error buffer with a byte that is not UTF-8
    (here from probing a file named in Latin-1) made every later libvips error of the worker
    process a UnicodeDecodeError (libvips/pyvips#80): the next job with a bad image failed with
    "'utf-8' codec can't decode byte 0xa9" instead of its reason. Now both jobs end as they
    would in a fresh process."""
    name = bytes(tmp_path / "Schliff_") + b"\xa9.tif"
    assert pyvips.vips_lib.vips_foreign_find_load(name) == pyvips.ffi.NULL
    path, message = _bad_files(tmp_path)["not an image"]
    bad, good = _submit(stack, path), _submit(stack, micrograph)
    stack.sent.extend([(PLAN_TASK, bad.id), (PLAN_TASK, good.id)])
    _run_all(stack, good.id)
    failed = stack.table.jobs.get(bad.id)
    assert failed.status == JobStatus.FAILED
    assert message in failed.error and path.name in failed.error, failed.error
    assert stack.table.jobs.get(good.id).status == JobStatus.SUCCEEDED


def test_unknown_model_and_missing_source_fail_the_job(stack, micrograph, tmp_path):
    # a job whose model is not (or no longer) registered when it is planned
    job = stack.table.jobs.create(JobSpec(source_url=micrograph.as_uri(), model="no-such-model",
                                          tile_size=128, halo=16))
    plan_job(stack, job.id)
    assert "not registered" in stack.table.jobs.get(job.id).error
    gone = tmp_path / "gone.png"
    gone.write_bytes(micrograph.read_bytes())
    job2 = _submit(stack, gone)
    gone.unlink()
    plan_job(stack, job2.id)
    j2 = stack.table.jobs.get(job2.id)
    assert j2.status == JobStatus.FAILED and "does not exist" in j2.error


def test_duplicate_plan_and_reduce_are_no_ops(stack, micrograph):
    job = _submit(stack, micrograph)
    assert len(plan_job(stack, job.id)) == 6
    assert plan_job(stack, job.id) == []  # duplicate delivery
    assert len(stack.table.rows.list(job.id)) == 6
    stack.sent.clear()
    for i in range(6):
        segment_row(stack, job.id, i)
    assert stack.sent == [(REDUCE_TASK, job.id)]
    assert reduce_job(stack, job.id) is not None
    assert reduce_job(stack, job.id) is None  # already succeeded
    assert stack.table.jobs.get(job.id).status == JobStatus.SUCCEEDED


def test_a_worker_that_lost_its_row_meanwhile_stores_and_counts_nothing_of_it(
        stack, micrograph, monkeypatch):
    """A worker judged dead (a job-table blip longer than three beats) or whose lease ran out
    while it computed a row: another worker took the row over. Two workers' labels of one row
    may differ (bfloat16 on different CPU or GPU kinds, within a package's validated 0.1 %)
    and the row's blobs have deterministic keys, so the one that lost the row stores nothing
    and counts nothing: the holder's strip, partial and class counts then belong together.
    Before 2026-12-07 it stored and completed the row anyway."""
    from datetime import timedelta

    from sqlalchemy import update

    from storage.jobtable.tables import Row, utcnow
    from worker.stages import segmenting

    job = _submit(stack, micrograph)
    plan_job(stack, job.id)
    stack.sent.clear()
    opened = segmenting.open_image

    def taken_over_meanwhile(*args, **kwargs):  # while this worker reads the row's source
        with stack.table.engine.begin() as conn:
            conn.execute(update(Row).where(Row.job_id == job.id, Row.index == 1)
                         .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        assert stack.table.rows.claim(job.id, 1, "other:7", lease_seconds=600).claimed
        return opened(*args, **kwargs)

    monkeypatch.setattr(segmenting, "open_image", taken_over_meanwhile)
    assert segment_row(stack, job.id, 1) == "duplicate"
    row = stack.table.rows.get(job.id, 1)
    assert (row.status, row.worker, row.counts) == (RowStatus.RUNNING, "other:7", None)
    assert [k for k in row_blob_keys(job.id, 1) if stack.blobs.exists(k)] == []
    monkeypatch.setattr(segmenting, "open_image", opened)
    assert segment_row(stack, job.id, 2) == "done"  # a row it holds: stored and counted
    assert all(stack.blobs.exists(k) for k in row_blob_keys(job.id, 2))


def test_a_worker_whose_row_was_taken_over_after_its_writes_counts_nothing(
        stack, micrograph, monkeypatch):
    """The row taken over after the worker's last lease check, while it wrote (its job-table
    calls waiting out an outage in which it was judged dead): its ``complete`` must not mark
    the row done with its counts beside the strip the new holder writes next. Before
    2026-12-08 ``rows.complete`` accepted any running row."""
    from datetime import timedelta

    from sqlalchemy import update

    from storage.jobtable.tables import Row, utcnow
    from worker.stages import segmenting

    job = _submit(stack, micrograph)
    plan_job(stack, job.id)
    stack.sent.clear()
    wrote = segmenting.write_row_partial

    def taken_over_after(*args, **kwargs):  # its last write, then the takeover
        wrote(*args, **kwargs)
        with stack.table.engine.begin() as conn:
            conn.execute(update(Row).where(Row.job_id == job.id, Row.index == 1)
                         .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        assert stack.table.rows.claim(job.id, 1, "other:7", lease_seconds=600).claimed

    monkeypatch.setattr(segmenting, "write_row_partial", taken_over_after)
    assert segment_row(stack, job.id, 1) == "duplicate"
    row = stack.table.rows.get(job.id, 1)
    assert (row.status, row.worker, row.counts) == (RowStatus.RUNNING, "other:7", None)
    monkeypatch.setattr(segmenting, "write_row_partial", wrote)
    assert segment_row(stack, job.id, 2) == "done"  # a row it holds: counted


def test_job_with_store_and_source_on_s3(tmp_path, tiny_package, micrograph, s3_bucket):
    """PELLETSEG_STORAGE_URL=s3://... and an s3:// source: the same code, through a real S3
    API (moto server on 127.0.0.1); the worker copies the source to local disk once."""
    import boto3
    import fsspec

    from storage.jobtable.engine import upgrade
    from tests.worker.conftest import make_settings
    from worker.context import WorkerContext

    fsspec.filesystem("s3").invalidate_cache()
    boto3.client("s3").upload_file(str(micrograph), s3_bucket, "uploads/pellet 7.png")
    settings = make_settings(tmp_path / "home", storage_url=f"s3://{s3_bucket}/pelletseg")
    upgrade(settings.resolved_database_url)
    sent: list[tuple] = []
    ctx = WorkerContext.from_settings(settings, lambda task, *args: sent.append((task, *args)))
    ctx.sent = sent
    assert not ctx.blobs.is_local
    ctx.models.publish(tiny_package)
    job = _submit(ctx, f"s3://{s3_bucket}/uploads/pellet 7.png")
    ctx.sent.append((PLAN_TASK, job.id))
    done = _run_all(ctx, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]}
    for name in ("labels.tif", "overlay.tif", "preview.png", "fractions.json", "fractions.csv",
                 "source.tif", "rows/00000.tif"):
        assert f"pelletseg/jobs/{job.id}/{name}" in keys
    doc = json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert sum(c["pixels"] for c in doc["classes"]) == 700 * 500
    missing = _submit(ctx, f"s3://{s3_bucket}/uploads/nope.png")
    plan_job(ctx, missing.id)
    failed = ctx.table.jobs.get(missing.id)
    assert failed.status == JobStatus.FAILED and "does not exist" in failed.error


def test_a_job_cancelled_while_planning_stays_cancelled(stack, micrograph):
    from core.states import JobStatus as S

    job = _submit(stack, micrograph)
    assert stack.table.jobs.transition(job.id, S.PLANNING, expected=S.QUEUED)
    assert stack.table.jobs.transition(job.id, S.CANCELLED)  # the user cancels mid-planning
    assert plan_job(stack, job.id) == []
    assert stack.table.jobs.get(job.id).status == S.CANCELLED
    assert stack.sent == []
    # the planner's own transition cannot revive it either
    assert not stack.table.jobs.transition(job.id, S.RUNNING, expected=S.PLANNING)


def test_reducer_overlay_failure_fails_the_job_and_stores_no_outputs(stack, micrograph,
                                                                    monkeypatch):
    """The overlay is rendered in a second thread beside the label map and preview: its
    failure must fail the job with its reason, once both threads are done, with no outputs
    in the store."""
    import threading

    from imaging import rendering
    from imaging.errors import ImageFormatError

    seen = {}

    def broken_overlay(source, strips, palette, out, **options):
        seen["thread"] = threading.current_thread().name
        seen["strips"] = len(strips)
        raise ImageFormatError(f"{source}: cannot be read as an image: truncated")

    monkeypatch.setattr(rendering, "write_overlay", broken_overlay)
    job = _submit(stack, micrograph)
    stack.sent.append((PLAN_TASK, job.id))
    failed = _run_all(stack, job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error.startswith("reducer: ") and "truncated" in failed.error
    assert seen == {"thread": seen["thread"], "strips": failed.rows_total}
    assert seen["thread"].startswith("reduce-overlay")
    assert not stack.blobs.exists(output_key(job.id, LABELS))
