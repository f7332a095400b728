"""Jobs of damaged and tiny images, through the stages as the task layer runs them: a tiled
TIFF missing the second half of its tile data (rows read it directly, no conversion) fails its
job with the file, the rows and what to do; a legal 1 x 1 px PNG completes."""

from __future__ import annotations

import json

import numpy as np
import pyvips
import tifffile

from core.states import JobStatus
from queues.names import PLAN_TASK, REDUCE_TASK, ROW_TASK
from storage.blobs.layout import FRACTIONS_JSON, output_key
from submission import SubmissionService
from tests.imaging.damage import noise_libvips_decodes
from worker.stages.guard import plan_guarded, reduce_guarded
from worker.stages.segmenting import segment_row


def _run(stack, image) -> str:
    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(image)))
    stack.sent.append((PLAN_TASK, job.id))
    stages = {PLAN_TASK: plan_guarded, ROW_TASK: segment_row, REDUCE_TASK: reduce_guarded}
    for _ in range(200):  # every message the stages send, as the workers would run them
        if not stack.sent:
            break
        task, *args = stack.sent.pop(0)
        stages[task](stack, *args)
    return job.id


def test_a_tiled_tiff_cut_in_half_fails_its_job_with_file_rows_and_what_to_do(stack, micrograph):
    pixels = np.asarray(pyvips.Image.new_from_file(str(micrograph)).numpy())[..., :3]
    path = micrograph.parent / "cut.tif"
    tifffile.imwrite(path, np.ascontiguousarray(pixels), photometric="rgb", tile=(128, 128),
                     compression="zlib")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    job = stack.table.jobs.get(_run(stack, path))
    assert job.status == JobStatus.FAILED
    assert "cut.tif, image rows" in job.error and "upload it again" in job.error
    assert not job.outputs or "fractions_json" not in job.outputs


def test_noise_that_libtiff_decodes_in_a_source_read_directly_fails_its_job(stack, micrograph):
    """A tiled 8-bit RGB TIFF is read by the rows as it is (no conversion): its deflate
    checksums are verified there (imaging/integrity.py), so noise that libvips decodes
    without an error fails the job instead of yielding labels."""
    pixels = np.ascontiguousarray(
        np.asarray(pyvips.Image.new_from_file(str(micrograph)).numpy())[..., :3])
    path = micrograph.parent / "noisy.tif"
    noise_libvips_decodes(path, lambda: tifffile.imwrite(
        path, pixels, photometric="rgb", tile=(128, 128), compression="zlib"), chunk=5)
    job = stack.table.jobs.get(_run(stack, path))
    assert job.status == JobStatus.FAILED
    assert "noisy.tif, image rows" in job.error and "does not inflate" in job.error
    assert not stack.table.jobs.get(job.id).outputs.get("source")  # it was read directly


def test_a_one_pixel_png_completes(stack, tmp_path):
    path = tmp_path / "one.png"
    pyvips.Image.new_from_array(np.full((1, 1, 3), 90, np.uint8)).copy(
        interpretation="srgb").pngsave(str(path))
    job = stack.table.jobs.get(_run(stack, path))
    assert job.status == JobStatus.SUCCEEDED, job.error
    doc = json.loads(stack.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))
    assert (doc["width"], doc["height"]) == (1, 1)
    assert sum(c["pixels"] for c in doc["classes"]) == 1
