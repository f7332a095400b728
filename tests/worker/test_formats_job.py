"""A microscope file through a real Celery worker (embedded broker): a 16-bit OME-TIFF with a
pixel size gives the labels of the same pixels as 8-bit, records the pixel size in the job's
outputs, and its outputs are OME-TIFFs with that physical scale."""

from __future__ import annotations

import time

import numpy as np
import pytest
import pyvips
from celery.contrib.testing.worker import start_worker

from core.states import JOB_TERMINAL, JobStatus
from queues.names import QUEUES, queue_name
from storage.blobs.layout import LABELS, OVERLAY, output_key
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.worker.conftest import make_settings, read_tiff, reference_run
from worker.context import WorkerContext
from worker.tasks import make_worker_app

tifffile = pytest.importorskip("tifffile")
ome_types = pytest.importorskip("ome_types")


def _wait(ctx, job_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ctx.table.jobs.get(job_id)
        if job.status in JOB_TERMINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


def test_16_bit_ome_tiff_job_through_a_real_worker(tmp_path, tiny_package, micrograph):
    rgb8 = pyvips.Image.new_from_file(str(micrograph)).numpy()[..., :3]
    if rgb8.ndim == 2:
        rgb8 = np.repeat(rgb8[..., None], 3, axis=2)
    source = tmp_path / "pellet.ome.tif"
    tifffile.imwrite(source, rgb8.astype(np.uint16) * 257, photometric="rgb", tile=(128, 128),
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.65, "PhysicalSizeXUnit": "µm",
                               "PhysicalSizeY": 0.65, "PhysicalSizeYUnit": "µm"})
    settings = make_settings(tmp_path / "home")
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_worker_app(settings)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    ctx.models.publish(tiny_package)
    queues = [queue_name(settings, q) for q in QUEUES]
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=queues, loglevel="WARNING", shutdown_timeout=60):
        job = (svc := SubmissionService(settings, app=app)).submit(svc.build_spec(str(source)))
        done = _wait(ctx, job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.outputs["pixel_size_um"] == pytest.approx(0.65)
    assert done.outputs["source"]  # 16-bit: converted once to the model-ready TIFF

    # v * 257 >> 8 == v: the same labels as the 8-bit pixels
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    expected, _ = reference_run(tmp_path, tiny_package, micrograph)
    np.testing.assert_array_equal(labels, expected)
    for name in (LABELS, OVERLAY):
        with tifffile.TiffFile(ctx.local_blob(output_key(job.id, name))) as tif:
            ome = ome_types.from_xml(tif.ome_metadata)
            assert len(tif.series[0].levels) >= 2
        assert ome.images[0].pixels.physical_size_x == pytest.approx(0.65)
