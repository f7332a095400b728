"""Several rows in flight per worker: a real ``celery worker`` process with a threads pool
(``PELLETSEG_ROWS_IN_FLIGHT=3``) shares one model between its rows and produces the same
label map as tiled inference of the same model, with every pixel counted once."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from core.geometry import TileGeometry
from core.states import JOB_TERMINAL, JobStatus
from imaging.reading import open_image, read_rows
from queues.app import make_celery
from storage.blobs.layout import LABELS, output_key
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.worker.conftest import make_settings, read_tiff
from worker.context import WorkerContext
from worker.engine.segmenter import Segmenter
from worker.engine.tiling import TileGrid
from worker.local import LocalWorkers

pytestmark = pytest.mark.slow


def test_a_threads_pool_worker_runs_rows_concurrently_with_one_model(tmp_path, tiny_package,
                                                                     micrograph):
    settings = make_settings(tmp_path / "home", rows_in_flight=3, torch_threads=1,
                             prefetch_bands=1, rows_per_task=2)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = make_celery(settings)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    ctx.models.publish(tiny_package)
    with LocalWorkers(settings, 1) as pool:
        job = (svc := SubmissionService(settings, app=app)).submit(svc.build_spec(str(micrograph)))
        deadline = time.monotonic() + 300
        while ctx.table.jobs.get(job.id).status not in JOB_TERMINAL:
            assert time.monotonic() < deadline, "job did not finish in 300 s"
            assert pool.alive() == 1
            time.sleep(0.2)
        cmdline = pool.procs[0].args
    done = ctx.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert cmdline[cmdline.index("--pool") + 1] == "threads"
    rows = ctx.table.rows.list(job.id)
    # ceil(500 / (2 * 96)) rows; the last tile row fitted to its 20 px
    assert len(rows) == 3 and len({r.worker for r in rows}) == 1
    # rows overlapped in time inside the one worker process
    spans = sorted((r.started_at, r.finished_at) for r in rows)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    image = read_rows(open_image(micrograph, max_pixels=10**9), 0, 500)
    seg = Segmenter(tiny_package, device="cpu", runtime=settings.runtime,  # the workers' runtime
                    cache_dir=settings.resolved_export_cache_dir)
    grid = TileGrid(700, 500, TileGeometry(128, 16), rows_per_task=2, fit_edges=True)
    expected = np.concatenate([
        seg.segment_strip_simple(image[slice(*grid.read_window(y0, y1))], grid, y0, y1, 8)
        for y0, y1 in grid.all_strip_bounds()])
    np.testing.assert_array_equal(labels, expected)
    assert np.sum([r.counts for r in rows], axis=0).sum() == 700 * 500
