"""One benchmark run: every measurement on the same machine, model and image, in order, then
the ratios. :func:`run` returns the result document that :mod:`benchmarks.report` writes."""

from __future__ import annotations

import math
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

from benchmarks import limit, memory, peers, pipeline
from benchmarks.config import BenchConfig, load_average, machine_info
from benchmarks.inputs import decode, describe_model, model_package, mosaic

Say = Callable[[str], None]


def _phase(doc: dict, name: str, say: Say, fn):
    """Run one measurement, recording its wall time and the load average around it."""
    say(f"{name} ...")
    before, started = load_average(), time.perf_counter()
    result = fn()
    doc["phases"][name] = {"seconds": round(time.perf_counter() - started, 1),
                           "load_before": before, "load_after": load_average()}
    say(f"{name}: {doc['phases'][name]['seconds']} s")
    return result


def run(cfg: BenchConfig, say: Say = print) -> dict:
    """Measure the limit, our pipeline, today's path, the peers and memory; see the package
    docstring.

    The pipeline, the limit and the peers run ``cfg.runtime`` at ``cfg``'s geometry (default
    the model package's); with ``cfg.reference`` today's path (eager fp32 at 1024/128) runs
    through the same queue too, alternated with the pipeline: pipeline, reference, MONAI,
    pipeline, reference, MONAI, ...

    Returns:
        The result document: ``device``, ``model``, ``runtime``, ``limit_mpx_s``,
        ``pipeline_mpx_s``, ``reference_pipeline_mpx_s``, ``reference_limit_mpx_s``,
        ``segment_row_mpx_s``, ``monai_mpx_s``, ``baseline_mpx_s``, ``rss_mib`` (per size),
        ``overhead_pct``, ``ratios`` and the details of every measurement.

    Raises:
        BenchError, RuntimeError: a measurement failed (the message says which and why).
    """
    from models.package import read_package
    from worker.engine.segmenter import Segmenter
    from worker.engine.tiling import TileGrid

    cfg = cfg.resolved()
    work = cfg.work_dir
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("run-*"):  # stacks of earlier runs; images and models are kept
        shutil.rmtree(old, ignore_errors=True)
    scratch = work / f"run-{os.getpid()}"
    cores = os.cpu_count() or 1
    doc: dict = {"config": cfg.as_dict(), "machine": machine_info(cfg.device), "phases": {}}
    package = model_package(cfg.model, work)
    cfg = cfg.for_package(read_package(package).geometry).fitted()
    doc["config"] = cfg.as_dict()
    exported = work / "exported"
    image = _phase(doc, "image", say, lambda: mosaic(work, cfg.image_side))
    doc["device"] = cfg.device
    doc["model"] = describe_model(package)

    # one segmenter in this process, all cores: the single-process limit, the task alone,
    # the peers
    seg = Segmenter(package, device=cfg.device, threads=cores, batch_size=cfg.batch_size,
                    precision=cfg.precision, runtime=cfg.runtime, cache_dir=exported)
    doc["runtime"] = seg.runtime.name
    if seg.device.type == "cpu":  # what the CPU runtime computes in (the package decides)
        convs = seg.runtime.f32_convs
        doc["cpu_precision"] = seg.runtime.precision + (
            f", first {convs} convolutions float32" if convs else "")
    batch = seg.batch_for(cfg.tile_size)
    cfg = replace(cfg, batch_size=batch)
    doc["config"]["batch_size"] = batch
    pixels = decode(image)
    tiles = limit.tile_batches(pixels, cfg.tile_size, batch)
    # the jobs' layout (fitted edge tiles); efficiency: the model pixels of cores that fit
    # the image exactly, against those its tiles compute (100 % for a side of whole strides)
    grid = TileGrid(cfg.image_side, cfg.image_side, cfg.geometry, fit_edges=True)
    our_tiles = grid.n_cols * grid.n_tile_rows
    doc["image"] = {"path": str(image), "width": cfg.image_side, "height": cfg.image_side,
                    "mpx": cfg.image_side**2 / 1e6, "tiles": our_tiles,
                    "tile_efficiency_pct": round(100 * cfg.image_side**2 * cfg.tile_size**2
                                                 / (cfg.stride**2 * grid.tile_pixels), 2),
                    "source": "mosaic of imaging/samples micrographs, tiled JPEG Q90 BigTIFF"}

    singles = [_phase(doc, "limit_single", say,
                      lambda: limit.forward_rate(seg, tiles, cfg.limit_seconds))]

    def pooled():
        if cfg.workers == 1 and cfg.threads == cores:  # the pipeline's config is this one
            rate = limit.forward_rate(seg, tiles, cfg.limit_seconds)["tiles_s"]
            return {"processes": 1, "threads": cores, "tiles_s": rate,
                    "per_process_tiles_s": [rate]}
        return limit.pooled_rate(package, cfg.device, cfg.workers, cfg.threads, batch,
                                 cfg.precision, tiles, cfg.limit_seconds, cfg.runtime, exported)

    ref = cfg.as_reference() if cfg.reference else None
    limits = [_phase(doc, "limit", say, pooled)]
    ref_limit = None
    if ref is not None:  # today's limit: eager fp32 at today's geometry, same processes
        ref_tiles = limit.tile_batches(pixels, ref.tile_size, batch)
        ref_limit = _phase(doc, "reference_limit", say, lambda: limit.pooled_rate(
            package, ref.device, ref.workers, ref.threads, batch, ref.precision, ref_tiles,
            ref.limit_seconds, ref.runtime, exported))
        ref_tiles = None
    queue = _phase(doc, "pipeline", say, lambda: pipeline.queue_run(cfg, package, image, scratch))
    refs = []
    if ref is not None:
        refs.append(_phase(doc, "reference_pipeline", say,
                           lambda: pipeline.queue_run(ref, package, image, scratch)))
    task = _phase(doc, "segment_row", say,
                  lambda: pipeline.task_alone(cfg, package, image, scratch, cores))
    ours = _read_labels(queue["labels_path"])
    ref_equal_pct = peers.agreement_pct(_read_labels(refs[0]["labels_path"]), ours) if refs else None
    monai = monai_unfolded = baseline = None
    queues, monais = [queue], []
    if cfg.peers:
        for pair in range(cfg.pairs):  # MONAI, then the pipeline again: alternated
            if pair:
                queues.append(_phase(doc, f"pipeline_{pair + 1}", say,
                                     lambda: pipeline.queue_run(cfg, package, image, scratch)))
                if ref is not None:
                    refs.append(_phase(doc, f"reference_pipeline_{pair + 1}", say,
                                       lambda: pipeline.queue_run(ref, package, image, scratch)))
            monais.append(_phase(doc, "monai" if not pair else f"monai_{pair + 1}", say,
                                 lambda: peers.run_monai(seg, pixels, cfg.tile_size, cfg.halo,
                                                         batch)))
        monai = monais[0]
        # MONAI as a user would call it: the package's model as built, batch norms unfolded
        plain = Segmenter(package, device=cfg.device, threads=cores, batch_size=batch,
                          precision=cfg.precision, fold_bn=False)
        monai_unfolded = _phase(
            doc, "monai_unfolded", say,
            lambda: peers.run_monai(plain, pixels, cfg.tile_size, cfg.halo, batch))
        plain = None
        baseline = _phase(doc, "baseline", say,
                          lambda: peers.run_baseline(seg, image, cfg.tile_size))
    queued = None
    if cfg.queued_jobs:  # a batch of jobs at once: reducers beside later jobs' rows
        queued = _phase(doc, "queued_jobs", say, lambda: pipeline.queued_run(
            cfg, package, image, scratch, cfg.queued_jobs))
    if cfg.rebracket_limit:
        limits.append(_phase(doc, "limit_again", say, pooled))
        singles.append(_phase(doc, "limit_single_again", say,
                              lambda: limit.forward_rate(seg, tiles, cfg.limit_seconds)))
    pixels = None  # free the decoded image before the memory runs
    sizes = {}
    for gpx in cfg.rss_sizes_gpx:
        sizes[f"{gpx:g}"] = _phase(
            doc, f"memory_{gpx:g}gpx", say,
            lambda g=gpx: memory.measure_size(cfg, package, g, scratch, cores))
    shutil.rmtree(scratch, ignore_errors=True)
    doc["machine"]["load_average_end"] = load_average()
    peer_runs = {"monai": monai, "monai_unfolded": monai_unfolded, "baseline": baseline}
    runs = [q["mpx_s"] for q in queues]  # before _summarise takes the first one's apart
    doc = _summarise(doc, cfg, singles, limits, queue, task, peer_runs, ours, sizes)
    doc = _pairs(doc, runs, [m["mpx_s"] for m in monais])
    if ref is not None:
        doc = _reference(doc, ref, ref_limit, refs, runs, ref_equal_pct)
    if queued is not None:
        doc = _queued(doc, queued)
    return doc


def _queued(doc: dict, queued: dict) -> dict:
    """The queued-jobs run beside the single job: ``queued_mpx_s``, ``ratios.queued_vs_limit``
    and ``ratios.queued_vs_pipeline`` (the pipeline's median single-job run), and the model's
    share of its worker time."""
    doc["queued"] = queued
    doc["queued_mpx_s"] = queued["mpx_s"]
    doc["ratios"]["queued_vs_limit"] = queued["mpx_s"] / doc["limit_mpx_s"]
    doc["ratios"]["queued_vs_pipeline"] = queued["mpx_s"] / doc["pipeline_mpx_s"]
    doc["model_share_pct"]["queued_jobs"] = queued["model_busy_pct"]
    return doc


def _reference(doc: dict, ref, ref_limit: dict, refs: list[dict], runs: list[float],
               equal_pct: float) -> dict:
    """Today's path beside the pipeline: ``reference_pipeline_mpx_s`` (median of its runs),
    ``reference_limit_mpx_s``, and ``ratios.pipeline_vs_reference``: the median of the
    per-pair ratios (pipeline run k / reference run k, measured back to back)."""
    ref_runs = [r["mpx_s"] for r in refs]
    pair_ratios = [p / r for p, r in zip(runs, ref_runs, strict=False)]
    doc["reference_pipeline_mpx_s"] = statistics.median(ref_runs)
    doc["reference_limit_mpx_s"] = limit.to_mpx_s(ref_limit["tiles_s"], ref.stride)
    doc["reference"] = {
        "runtime": ref.runtime, "tile_size": ref.tile_size, "halo": ref.halo,
        "runs_mpx_s": ref_runs, "pair_ratios": pair_ratios,
        "limit_tiles_s": ref_limit["tiles_s"],
        "labels_equal_to_pipeline_pct": equal_pct,
        "first_run": {k: v for k, v in refs[0].items() if k not in ("labels_path",)},
    }
    doc["ratios"]["pipeline_vs_reference"] = statistics.median(pair_ratios)
    doc["ratios"]["limit_vs_reference_limit"] = doc["limit_mpx_s"] / doc["reference_limit_mpx_s"]
    doc["ratios"]["reference_vs_reference_limit"] = (doc["reference_pipeline_mpx_s"]
                                                     / doc["reference_limit_mpx_s"])
    return doc


def _pairs(doc: dict, runs: list[float], monai_runs: list[float]) -> dict:
    """Medians over the alternated pipeline and MONAI runs (Mpx/s; :attr:`BenchConfig.pairs`):
    ``pipeline_mpx_s`` and ``monai_mpx_s`` become the medians of their runs, the pipeline /
    MONAI ratio the median of the per-pair ratios (each pair measured back to back, so under
    the same load); the details of the first runs stay in ``pipeline`` and ``monai``."""
    doc["pipeline"]["runs_mpx_s"] = runs
    doc["pipeline_mpx_s"] = statistics.median(runs)
    doc["ratios"]["pipeline_vs_limit"] = doc["pipeline_mpx_s"] / doc["limit_mpx_s"]
    if not monai_runs:
        return doc
    pair_ratios = [p / m for p, m in zip(runs, monai_runs, strict=True)]
    doc["monai"]["runs_mpx_s"] = monai_runs
    doc["monai"]["pair_ratios"] = pair_ratios
    doc["monai_mpx_s"] = statistics.median(monai_runs)
    doc["ratios"]["pipeline_vs_monai"] = statistics.median(pair_ratios)
    doc["ratios"]["segment_row_vs_monai"] = doc["segment_row_mpx_s"] / doc["monai_mpx_s"]
    return doc


def _read_labels(path: str):
    from imaging.reading import open_image

    image = open_image(path, max_pixels=10**10)
    return image.numpy().reshape(image.height, image.width)


def _summarise(doc, cfg, singles, limits, queue, task, peer_runs, ours, sizes) -> dict:
    """Limits are the means of the runs before and after the others (load drift); ratios
    divide by them. ``peer_runs``: peer name -> its run (None: not run)."""
    stride = cfg.stride
    limit_tiles_s = statistics.fmean(r["tiles_s"] for r in limits)
    single_tiles_s = statistics.fmean(r["tiles_s"] for r in singles)
    doc["limit_tiles_s"] = limit_tiles_s
    doc["limit_mpx_s"] = limit.to_mpx_s(limit_tiles_s, stride)
    doc["limit"] = {
        "processes": limits[0]["processes"], "threads_per_process": limits[0]["threads"],
        "batch_size": cfg.batch_size,
        "runs_tiles_s": [round(r["tiles_s"], 4) for r in limits],
        "single_process_runs_tiles_s": [round(r["tiles_s"], 4) for r in singles],
        "single_process_tiles_s": single_tiles_s,
        "single_process_mpx_s": limit.to_mpx_s(single_tiles_s, stride),
    }
    doc["pipeline_mpx_s"] = queue.pop("mpx_s")
    queue.pop("labels_path")
    doc["pipeline"] = queue
    doc["segment_row_mpx_s"] = task["mpx_s"]
    doc["segment_row"] = task
    overhead_s = queue["queue_gap_s_mean"] + task["job_table_s"] + task["storage_s"]
    cycle_s = queue["task_s_mean"] + queue["queue_gap_s_mean"]
    doc["overhead_pct"] = 100 * overhead_s / cycle_s
    doc["overhead"] = {
        "queue_gap_s": queue["queue_gap_s_mean"], "job_table_s": task["job_table_s"],
        "storage_s": task["storage_s"], "task_s": queue["task_s_mean"],
        "definition": "(mean queue gap between a worker's rows + job-table time + blob-store "
                      "time of one segment_row) / (mean task time + mean queue gap)",
    }
    ratios = {
        "pipeline_vs_limit": doc["pipeline_mpx_s"] / doc["limit_mpx_s"],
        "pipeline_rows_phase_vs_limit": queue["rows_mpx_s"] / doc["limit_mpx_s"],
        "segment_row_vs_single_process_limit":
            task["mpx_s"] / doc["limit"]["single_process_mpx_s"],
    }
    for name, peer in peer_runs.items():
        if peer is None:
            doc[f"{name}_mpx_s"] = math.nan
            continue
        labels = peer.pop("labels")
        peer["agreement_with_ours_pct"] = peers.agreement_pct(labels, ours)
        doc[f"{name}_mpx_s"] = peer["mpx_s"]
        doc[name] = peer
        ratios[f"pipeline_vs_{name}"] = doc["pipeline_mpx_s"] / peer["mpx_s"]
        ratios[f"segment_row_vs_{name}"] = task["mpx_s"] / peer["mpx_s"]
    doc["ratios"] = ratios
    # the model's share of each run's own time: not skewed by load that changes between runs
    doc["model_share_pct"] = {
        "pipeline_end_to_end": queue["model_busy_pct"],
        "pipeline_rows_phase": queue["model_busy_rows_phase_pct"],
        "segment_row_alone": task["model_share_pct"],
        **{name: peer["model_share_pct"] for name, peer in peer_runs.items() if peer},
    }
    doc["rss_mib"] = {k: {"worker": v["worker_rss_mib"], "reducer": v["reducer_rss_mib"]}
                      for k, v in sizes.items()}
    doc["memory"] = sizes
    return doc
