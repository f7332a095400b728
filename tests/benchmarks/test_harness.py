"""The benchmark harness runs end to end on a tiny configuration and writes a complete result.

No timing is asserted: only that every measurement ran and produced sane numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.config import BenchConfig
from benchmarks.peers import monai_windows
from benchmarks.pipeline import row_timeline
from benchmarks.timing import TimedProxy

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["device", "model", "limit_mpx_s", "pipeline_mpx_s", "reference_pipeline_mpx_s",
        "reference_limit_mpx_s", "segment_row_mpx_s", "monai_mpx_s", "baseline_mpx_s", "rss_mib",
        "overhead_pct"]


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory) -> Path:
    import segmentation_models_pytorch as smp
    import torch

    from worker.engine.network import write_package

    torch.manual_seed(0)
    params = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    model = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None,
                             in_channels=3, classes=3, **params)
    folder = tmp_path_factory.mktemp("pkg") / "bench-tiny" / "1"
    classes = [{"index": i, "name": n, "rgb": (i * 80, 0, 0), "label_value": i}
               for i, n in enumerate(["a", "b", "c"])]
    write_package(folder, model, {
        "name": "bench-tiny", "version": "1", "architecture": "Unet", "encoder": "resnet18",
        "arch_params": params, "classes": classes, "tile_size": 128, "halo": 16})
    return folder


def _sane(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_bench_command_writes_every_key_with_sane_values(tmp_path, tiny_package):
    pytest.importorskip("monai", reason="the MONAI peer needs monai (pip install monai)")
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key in [k for k in env if k.startswith("PELLETSEG_")]:
        env.pop(key)
    res = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "--quick", "--device", "cpu", "--json", str(out),
         "--model", str(tiny_package), "--image-side", "300", "--tile-size", "128",
         "--halo", "16", "--workers", "1", "--limit-seconds", "0.3", "--rss-sizes", "0.0001",
         "--stream-reduce", "--pairs", "1", "--work", str(tmp_path / "work"),
         "--reference-geometry", "96/16"],
        capture_output=True, text=True, timeout=900, env=env, cwd=ROOT, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    doc = json.loads(out.read_text())
    assert all(k in doc for k in KEYS), [k for k in KEYS if k not in doc]
    assert doc["device"] == "cpu" and doc["model"]["name"] == "bench-tiny"
    for key in KEYS[2:-2]:
        assert _sane(doc[key]), (key, doc[key])
    assert math.isfinite(doc["overhead_pct"]) and 0 <= doc["overhead_pct"] < 100
    assert list(doc["rss_mib"]) == ["0.0001"]
    assert _sane(doc["rss_mib"]["0.0001"]["worker"]) and _sane(doc["rss_mib"]["0.0001"]["reducer"])
    assert all(_sane(v) for v in doc["ratios"].values()), doc["ratios"]
    assert set(doc["model_share_pct"]) == {"pipeline_end_to_end", "pipeline_rows_phase",
                                           "segment_row_alone", "monai", "monai_unfolded",
                                           "baseline"}
    assert all(0 < v <= 100 for v in doc["model_share_pct"].values()), doc["model_share_pct"]
    assert doc["pipeline"]["device_s_rows_logged"] == 4
    # overlap matched: MONAI's scan interval is our stride; our tiling covers the image
    assert doc["monai"]["scan_interval"] == 128 - 2 * 16
    assert doc["monai"]["windows"] == monai_windows(300, 300, 128, 96) == 9
    # the same MONAI run on the model with its batch norms unfolded: same labels up to rounding
    assert doc["monai_unfolded"]["windows"] == 9 and _sane(doc["monai_unfolded_mpx_s"])
    # (a random-init model's logits are near ties: MONAI's blending differs from our crops)
    assert abs(doc["monai_unfolded"]["agreement_with_ours_pct"]
               - doc["monai"]["agreement_with_ours_pct"]) < 0.5
    # 4 x 4 tiles, the last of each axis fitted to 64 px (12 + 16 + 16); 300² px of cores need
    # 300² x (128 / 96)² model px of the (3 x 128 + 64)² px the tiles compute
    assert doc["image"]["tiles"] == 16 and doc["baseline"]["tiles"] == 9
    assert doc["image"]["tile_efficiency_pct"] == round(100 * 300**2 * 128**2 / 96**2 / 448**2, 2)
    assert doc["pipeline"]["rows"] == 4 and doc["pipeline"]["warm_workers"] == 1
    # --pairs 1 (the medians over several pairs: test_pairs_and_the_reference_take_medians)
    runs, monai_runs = doc["pipeline"]["runs_mpx_s"], doc["monai"]["runs_mpx_s"]
    assert len(runs) == len(monai_runs) == 1 and all(_sane(r) for r in runs + monai_runs)
    assert doc["pipeline_mpx_s"] == runs[0] and doc["monai_mpx_s"] == monai_runs[0]
    assert doc["ratios"]["pipeline_vs_monai"] == pytest.approx(runs[0] / monai_runs[0])
    # today's path (eager fp32 at the reference geometry) beside the pipeline
    ref = doc["reference"]
    assert (ref["runtime"], ref["tile_size"], ref["halo"]) == ("eager", 96, 16)
    assert len(ref["runs_mpx_s"]) == 1 and _sane(ref["runs_mpx_s"][0])
    assert doc["reference_pipeline_mpx_s"] == ref["runs_mpx_s"][0]
    assert doc["ratios"]["pipeline_vs_reference"] == pytest.approx(runs[0] / ref["runs_mpx_s"][0])
    assert "Pipeline and today's path alternated once" in out.with_suffix(".md").read_text()
    assert ref["first_run"]["rows"] == 5  # ceil(300 / 64): its own geometry, not the package's
    assert 50 < ref["labels_equal_to_pipeline_pct"] <= 100
    import importlib.util

    want = "openvino" if importlib.util.find_spec("openvino") else "eager"
    assert doc["runtime"] == want and doc["config"]["runtime"] == "auto"
    # --stream-reduce: the pictures came from the streaming stitcher
    assert doc["config"]["stream_reduce"] is True and doc["pipeline"]["streamed"] is True
    assert 0 <= doc["pipeline"]["after_last_row_s"] < doc["pipeline"]["seconds"]
    assert doc["memory"]["0.0001"]["side"] == 316
    # the worker-time budget: every row found in the logs, stages adding up to workers x time
    budget = doc["pipeline"]["budget"]
    assert budget["rows_logged"] == 4 and budget["workers"] == 1
    assert budget["total_s"] == pytest.approx(doc["pipeline"]["seconds"])
    assert sum(s["seconds"] for s in budget["stages"].values()) == pytest.approx(
        budget["total_s"], abs=0.01)
    assert budget["stages"]["model"]["seconds"] == pytest.approx(
        doc["pipeline"]["device_s"], abs=0.01)
    assert all(budget["stages"][k]["seconds"] > 0 for k in ("model", "checkpoints", "partial"))
    assert budget["reducer"]["seconds"] > 0
    assert "queued" not in doc  # --queued-jobs 0 (default): not run
    md = out.with_suffix(".md").read_text()
    assert "Worker time of the pipeline run" in md
    assert "| **pipeline** end to end" in md and "MONAI sliding_window_inference" in md
    assert "| **reference pipeline**: today's path (eager, T = 96, halo = 16)" in md
    assert "batch norms not folded" in md
    assert "0.0001 Gpx" in md


@pytest.mark.parametrize(("h", "w"), [(1024, 1024), (4608, 4608), (3000, 5000), (500, 2000)])
def test_monai_window_count_matches_monai(h, w):
    utils = pytest.importorskip("monai.data.utils", reason="needs monai")
    dense_patch_slices = utils.dense_patch_slices

    tile, interval = 1024, 768
    expected = len(dense_patch_slices((max(h, tile), max(w, tile)), (tile, tile),
                                      (interval, interval)))
    assert monai_windows(h, w, tile, interval) == expected


def test_row_timeline_splits_tasks_and_queue_gaps():
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def row(worker, start, end):
        return SimpleNamespace(worker=worker, started_at=t0 + dt.timedelta(seconds=start),
                               finished_at=t0 + dt.timedelta(seconds=end))

    rows = [row("a", 0, 10), row("a", 11, 21), row("b", 0.5, 10.5), row("b", 12.5, 20.5)]
    t = row_timeline(rows)
    assert t["workers_used"] == 2 and t["rows"] == 4
    assert t["task_s_mean"] == pytest.approx(9.5)
    assert t["queue_gap_s_mean"] == pytest.approx(1.5) and t["queue_gap_s_max"] == pytest.approx(2)
    assert t["rows_phase_s"] == pytest.approx(21)


def test_job_log_events_are_read_from_the_workers_logs(tmp_path):
    from benchmarks.pipeline import job_log_events

    (tmp_path / "worker-0.log").write_text(
        "2026-11-23 11:12:28 [info     ] \x1b[1mrow.computed\x1b[0m batch_size=1 "
        "\x1b[36mdevice_s\x1b[0m=\x1b[35m12.5\x1b[0m job_id=J1 row=0\n"
        "2026-11-23 11:12:29 [info     ] row.computed device_s=3.0 job_id=J2 row=0\n"
        "2026-11-23 11:12:30 [info     ] row.done job_id=J1 row=0 seconds=13\n")
    (tmp_path / "worker-1.log").write_text(
        "2026-11-23 11:12:31 [info     ] row.computed device_s=7.25 job_id=J1 row=1\n"
        "2026-11-23 11:12:40 [info     ] reduce.done job_id=J1 seconds=1.5 streamed=False\n")
    events = job_log_events(tmp_path, "J1")
    assert [e["event"] for e in events] == ["row.computed", "row.done", "row.computed",
                                           "reduce.done"]
    assert sum(e.get("device_s", 0) for e in events) == 19.75  # J2's line is not counted
    assert events[1]["seconds"] == 13.0 and events[3]["streamed"] == "False"


def test_worker_time_budget_adds_up_to_the_workers_time():
    from benchmarks.pipeline import worker_time_budget

    events = []
    for row in range(2):
        events += [
            {"event": "row.computed", "row": row, "device_s": 3.0, "strip_s": 3.5, "write_s": 0.2},
            {"event": "row.partial", "row": row, "seconds": 0.4},
            {"event": "row.done", "row": row, "seconds": 4.5},
        ]
    events.append({"event": "reduce.done", "seconds": 1.2, "overlay_s": 0.9, "streamed": "False"})
    # 2 workers, one row each, 10 s from submission: 0.5 s to the first claim, rows phase 5 s
    budget = worker_time_budget(events, workers=2, seconds=10.0, submit_to_first_row_s=0.5,
                                rows_phase_s=5.0)
    stages = {k: v["seconds"] for k, v in budget["stages"].items()}
    assert stages == pytest.approx({"model": 6.0, "tiles": 1.0, "checkpoints": 0.4,
                                    "partial": 0.8, "row_rest": 0.8, "between_rows": 1.0,
                                    "before_rows": 1.0, "after_rows": 9.0})
    assert sum(stages.values()) == pytest.approx(budget["total_s"]) == 20.0
    assert budget["stages"]["model"]["pct"] == 30.0
    assert budget["rows_logged"] == 2
    assert budget["reducer"] == {"seconds": 1.2, "overlay_s": 0.9}


def test_timed_proxy_counts_calling_thread_only():
    import threading

    class Store:
        value = 3

        def get(self, x):
            return x * 2

    class Table:  # repositories as attributes, like the job table's
        rows = Store()

    proxy = TimedProxy(Store())
    assert proxy.get(4) == 8 and proxy.value == 3
    other = threading.Thread(target=proxy.get, args=(1,))
    other.start()
    other.join()
    assert proxy.calls == 1 and proxy.seconds >= 0
    table = TimedProxy(Table())
    assert table.rows.get(2) == 4 and table.rows.get(3) == 6 and table.rows.value == 3
    assert table.calls == 2  # methods of its parts are counted into its totals


def test_presets_resolve_for_this_machine(tmp_path):
    from core.geometry import TileGeometry

    quick = BenchConfig.preset(True, "cpu", work_dir=tmp_path).resolved()
    cores = os.cpu_count() or 1
    assert quick.tile_size is None and quick.runtime == "auto" and quick.reference
    bundled = BenchConfig.preset(True, "cpu").resolved().for_package(TileGeometry(1792, 128)).fitted()
    assert bundled.image_side == (6144 if cores == 2 else bundled.image_side)
    assert (bundled.tile_size, bundled.halo) == (1792, 128)
    ref = bundled.as_reference()
    assert (ref.runtime, ref.tile_size, ref.halo) == ("eager", 1024, 128)
    assert BenchConfig.preset(True, "cpu", halo=64).for_package(TileGeometry(1792, 128)).halo == 64
    for c in (bundled, ref):  # no partly empty tiles in the bench image, on either path
        assert c.image_side % c.stride == 0 and (c.image_side // c.stride) % c.workers == 0
    assert quick.workers == cores and quick.threads == 1 and quick.batch_size == 1
    assert quick.rows_in_flight == 1 and quick.model == "ebc-unet-mnv2"
    assert quick.stream_reduce is False
    quick = quick.for_package(TileGeometry(1024, 128)).fitted()
    assert quick.image_side == 4608 or cores != 2  # today's stride: 6 tile rows
    gpu = BenchConfig.preset(False, "cuda").resolved()
    assert gpu.model == "unet-resnet34" and gpu.workers == 1 and gpu.rows_in_flight == 3
    assert gpu.stream_reduce is True
    assert BenchConfig.preset(True, "cuda", stream_reduce=False).resolved().stream_reduce is False
    assert gpu.batch_size == 0 and 340e6 < gpu.image_side**2 < 350e6  # the 346 Mpx pellet


@pytest.mark.parametrize(("side", "batch", "shape"), [
    (1000, 1, (8, 1)), (1000, 3, (3, 3)), (100, 2, (4, 2)), (1000, 16, (1, 16)),
])
def test_limit_tiles_are_real_and_different(side, batch, shape):
    import numpy as np

    from benchmarks.limit import tile_batches

    image = np.random.default_rng(0).integers(0, 256, (side, side + 7, 3), dtype=np.uint8)
    tiles = tile_batches(image, 128, batch)
    assert tiles.shape == (*shape, 128, 128, 3) and tiles.dtype == np.uint8
    flat = tiles.reshape(-1, 128, 128, 3)
    if side >= 128:
        np.testing.assert_array_equal(flat[0], image[:128, :128])  # a crop, not padding
        assert not np.array_equal(flat[0], flat[-1])  # spread over the image


def test_fitting_side():
    from benchmarks.config import fitting_side

    assert fitting_side(4608, [1536, 768], 2) == 6144  # 4608 = 3 tile rows of 1536: odd
    assert fitting_side(4608, [768], 2) == 4608
    assert fitting_side(4608, [1152, 768], 2) == 4608
    assert fitting_side(100, [64], 1) == 128
    assert fitting_side(4608, [896, 768], 2) == 4608 + 896 - 4608 % 896  # none fits: rounded up


def test_agreement_images_need_only_the_data_sets_asked_for(tmp_path):
    from PIL import Image

    from benchmarks.agreement import real_images

    images = tmp_path / "nasa-ebc" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    for i, t in enumerate(tiles):
        Image.fromarray(t).save(images / f"{i:02d}.png")
    # NASA EBC alone (what benchmarks/gpu carries): no lumenstone-s2 folder needed
    (data_set, name, mosaic), = real_images(tmp_path, lumenstone=0, ebc_mosaics=1)
    assert (data_set, name) == ("nasa-ebc", "2x2 00+01+02+03")
    assert mosaic.shape == (96, 128, 3)
    assert np.array_equal(mosaic[:48, :64], tiles[0]) and np.array_equal(mosaic[:48, 64:], tiles[1])
    assert np.array_equal(mosaic[48:, :64], tiles[2]) and np.array_equal(mosaic[48:, 64:], tiles[3])
    asked = r"lumenstone-s2/images/val/\*\.jpg \(--lumenstone 2\)"
    with pytest.raises(FileNotFoundError, match=asked):
        real_images(tmp_path, lumenstone=2, ebc_mosaics=1)
    with pytest.raises(FileNotFoundError):
        real_images(tmp_path, lumenstone=0, ebc_mosaics=0)  # nothing asked for


def test_queued_jobs_run_through_warm_workers_and_are_reported(tmp_path, tiny_package):
    """``--queued-jobs``: N jobs of the bench image submitted at once to warm workers
    (:func:`benchmarks.pipeline.queued_run`), then reported beside the single job
    (``runner._queued``, the Markdown's row and line). Apart from the whole-bench test above,
    which it would lengthen by a worker start and N jobs."""
    from dataclasses import replace

    from benchmarks.inputs import mosaic
    from benchmarks.pipeline import queued_run
    from benchmarks.report import _queued_rows
    from benchmarks.runner import _queued

    cfg = replace(BenchConfig(image_side=300, tile_size=128, halo=16, workers=1,
                              work_dir=tmp_path / "work").resolved(), stream_reduce=False)
    image = mosaic(cfg.work_dir, cfg.image_side)
    q = queued_run(cfg, tiny_package, image, tmp_path / "scratch", jobs=2)
    assert q["jobs"] == 2 and q["mpx"] == pytest.approx(2 * 300 * 300 / 1e6)
    assert len(q["job_seconds"]) == 2 and 0 < min(q["job_seconds"])
    assert max(q["job_seconds"]) <= q["seconds"] + 1  # job-table clock vs this process's
    assert q["mpx_s"] == pytest.approx(q["mpx"] / q["seconds"])
    assert q["device_s"] > 0 and 0 < q["model_busy_pct"] <= 100
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        queued_run(cfg, tiny_package, image, tmp_path / "scratch", jobs=0)
    doc = _queued({"limit_mpx_s": 2 * q["mpx_s"], "pipeline_mpx_s": q["mpx_s"] / 0.8,
                   "ratios": {}, "model_share_pct": {}}, q)
    assert doc["queued_mpx_s"] == q["mpx_s"]
    assert doc["ratios"] == {"queued_vs_limit": pytest.approx(0.5),
                             "queued_vs_pipeline": pytest.approx(0.8)}
    assert doc["model_share_pct"] == {"queued_jobs": q["model_busy_pct"]}
    assert _queued_rows(doc) == [
        f"| pipeline, 2 jobs queued at once (first submission -> last succeeded; each job's "
        f"reducer beside later jobs' rows) | - | {q['mpx_s']:.3f} | 0.50 |"]
    assert _queued_rows({}) == []


def test_pairs_and_the_reference_take_medians():
    """Runs alternated in pairs: each figure is the median of its runs, each ratio the median
    of the per-pair ratios (a pair measured back to back, under the same load)."""
    from benchmarks.runner import _pairs, _reference

    doc = {"pipeline": {}, "monai": {}, "ratios": {}, "limit_mpx_s": 2.0, "segment_row_mpx_s": 1.0}
    runs, monai_runs = [1.0, 3.0, 2.0], [2.0, 1.0, 4.0]
    doc = _pairs(doc, runs, monai_runs)
    assert doc["pipeline_mpx_s"] == 2.0 and doc["monai_mpx_s"] == 2.0
    assert doc["monai"]["pair_ratios"] == [0.5, 3.0, 0.5]
    assert doc["ratios"]["pipeline_vs_monai"] == 0.5  # not 2.0 / 2.0
    assert doc["ratios"]["pipeline_vs_limit"] == 1.0
    ref = SimpleNamespace(runtime="eager", tile_size=96, halo=16, stride=64)
    refs = [{"mpx_s": m, "rows": 5, "labels_path": "x"} for m in (0.5, 2.0, 1.0)]
    doc = _reference(doc, ref, {"tiles_s": 10.0}, refs, runs, 99.5)
    assert doc["reference_pipeline_mpx_s"] == 1.0
    assert doc["reference"]["pair_ratios"] == [2.0, 1.5, 2.0]
    assert doc["ratios"]["pipeline_vs_reference"] == 2.0
    assert doc["reference"]["first_run"] == {"mpx_s": 0.5, "rows": 5}
    assert doc["reference_limit_mpx_s"] == pytest.approx(10.0 * 64 * 64 / 1e6)
