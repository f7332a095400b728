"""Writing a benchmark result: the JSON document and a Markdown table beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _times(n: int) -> str:
    """``once`` or ``N times``."""
    return "once" if n == 1 else f"{n} times"


def _plain(value):
    """JSON-ready copy: numpy scalars -> Python, tuples -> lists, NaN -> None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(doc: dict, json_path: Path) -> Path:
    """Write ``doc`` to ``json_path`` and its Markdown table to the same name with ``.md``.

    Returns:
        The Markdown file's path.
    """
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_plain(doc), indent=2) + "\n")
    md = json_path.with_suffix(".md")
    md.write_text(markdown(doc))
    return md


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


#: Each peer's row label in the Markdown table, from its run's details.
_PEERS = {
    "monai": lambda m: (f"MONAI sliding_window_inference (overlap {m['overlap']:.3f}, interval "
                        f"{m['scan_interval']} px, {m['windows']} windows, in memory)"),
    "monai_unfolded": lambda m: ("MONAI as above on the package's model as built (batch norms "
                                 "not folded)"),
    "baseline": lambda b: (f"thesis-style baseline (PIL crop, no overlap, 1 tile per pass, "
                           f"{b['tiles']} tiles, in memory)"),
}


def _reference_rows(doc: dict) -> list[str]:
    """Table rows of today's path (reference runtime and geometry), if it was run."""
    ref = doc.get("reference")
    if not ref:
        return []
    limit_mpx = doc["limit_mpx_s"]
    what = f"{ref['runtime']}, T = {ref['tile_size']}, halo = {ref['halo']}"
    return [
        (f"| reference limit: today's path ({what}), same processes | "
         f"{_f(ref['limit_tiles_s'])} | {_f(doc['reference_limit_mpx_s'])} | "
         f"{_f(doc['reference_limit_mpx_s'] / limit_mpx, 2)} |"),
        (f"| **reference pipeline**: today's path ({what}) through the same queue | - | "
         f"**{_f(doc['reference_pipeline_mpx_s'])}** | "
         f"{_f(doc['reference_pipeline_mpx_s'] / limit_mpx, 2)} |"),
    ]


def _queued_rows(doc: dict) -> list[str]:
    """The queued-jobs row of the throughput table (none when it was not run)."""
    q = doc.get("queued")
    if not q:
        return []
    return [(f"| pipeline, {q['jobs']} jobs queued at once (first submission -> last succeeded; "
             f"each job's reducer beside later jobs' rows) | - | {_f(doc['queued_mpx_s'])} | "
             f"{_f(doc['queued_mpx_s'] / doc['limit_mpx_s'], 2)} |")]


def markdown(doc: dict) -> str:
    """The result as Markdown: setup, throughput, ratios, overhead, memory, phases."""
    cfg, mach, img, lim = doc["config"], doc["machine"], doc["image"], doc["limit"]
    model, pipe, task = doc["model"], doc["pipeline"], doc["segment_row"]
    stride = cfg["tile_size"] - 2 * cfg["halo"]
    limit_mpx = doc["limit_mpx_s"]
    gpu = f", {mach['gpu']}" if "gpu" in mach else ""
    lines = [
        f"# pelletseg bench: {doc['device']}, {model['name']} ({mach['date_utc']})",
        "",
        (f"- Machine: {mach['host']}, {mach['cpu_cores']} cores ({mach['cpu']}), "
        f"{mach['memory_gib']} GiB{gpu}; Python {mach['python']}, torch {mach['torch']}, "
        f"libvips {mach['libvips']}"),
        (f"- Load average (1/5/15 min) at start {mach['load_average_start']}, at end "
        f"{mach.get('load_average_end')}"),
        (f"- Model: {model['name']} {model['version']} ({model['architecture']}-"
        f"{model['encoder']}, {model['parameters_m']} M parameters, {model['classes']} "
        f"classes, {model['weights']})"),
        f"- Image: {img['width']} x {img['height']} px ({img['mpx']:.1f} Mpx), {img['source']}",
        (f"- Tiles: T = {cfg['tile_size']}, halo = {cfg['halo']}, stride = {stride} px; "
        f"{img['tiles']} tiles (fitted edge tiles, as jobs), tile efficiency "
        f"{img['tile_efficiency_pct']} % (the image's model pixels at (T / stride)² over the "
        "tiles')"),
        f"- Runtime: {doc.get('runtime', 'eager')} (PELLETSEG_RUNTIME={cfg.get('runtime', 'eager')})",
        (f"- Workers: {cfg['workers']} x {cfg['threads']} torch threads, "
         f"batch {cfg['batch_size']}, "
        f"{cfg['rows_in_flight']} row(s) in flight per worker, precision "
        f"{cfg['precision'] if doc['device'].startswith('cuda') else doc.get('cpu_precision', 'fp32')}"
        ", streaming "
        f"stitcher {'on' if cfg.get('stream_reduce') else 'off'}"),
        "",
        "| measurement | tiles/s | Mpx/s | / limit |",
        "|---|---|---|---|",
        (f"| limit: model only, batches in device memory, {lim['processes']} process(es) x "
        f"{lim['threads_per_process']} threads | {_f(doc['limit_tiles_s'])} | {_f(limit_mpx)} "
        f"| 1.00 |"),
        (f"| limit, 1 process x all cores | {_f(lim['single_process_tiles_s'])} | "
        f"{_f(lim['single_process_mpx_s'])} | {_f(lim['single_process_mpx_s'] / limit_mpx, 2)} |"),
        (f"| **pipeline** end to end through the queue (submit -> succeeded, warm workers) | - | "
        f"**{_f(doc['pipeline_mpx_s'])}** | **{_f(doc['pipeline_mpx_s'] / limit_mpx, 2)}** |"),
        *_reference_rows(doc),
        *_queued_rows(doc),
        (f"| pipeline, rows phase only (first claim -> last row done) | - | "
        f"{_f(pipe['rows_mpx_s'])} | {_f(pipe['rows_mpx_s'] / limit_mpx, 2)} |"),
        (f"| segment_row alone (1 process x all cores; read + infer + write + job table) | - | "
        f"{_f(doc['segment_row_mpx_s'])} | {_f(doc['segment_row_mpx_s'] / limit_mpx, 2)} |"),
    ]
    for name, describe in _PEERS.items():
        peer = doc.get(name)
        if peer:
            runs = peer["windows"] if "windows" in peer else peer["tiles"]
            lines.append(
                f"| {describe(peer)} | {_f(runs / peer['seconds'])} | {_f(doc[f'{name}_mpx_s'])} "
                f"| {_f(doc[f'{name}_mpx_s'] / limit_mpx, 2)} |")
    if doc.get("monai") and len(doc["monai"].get("runs_mpx_s", [])) > 1:
        lines += ["", (
            f"Pipeline and MONAI alternated {_times(len(pipe['runs_mpx_s']))}; the table and "
            f"ratios give medians. Pipeline runs {[round(r, 3) for r in pipe['runs_mpx_s']]} "
            f"Mpx/s, MONAI runs {[round(r, 3) for r in doc['monai']['runs_mpx_s']]} Mpx/s, "
            f"pipeline / MONAI per pair {[round(r, 3) for r in doc['monai']['pair_ratios']]}.")]
    if doc.get("reference"):
        ref = doc["reference"]
        lines += ["", (
            f"Pipeline and today's path alternated {_times(len(ref['runs_mpx_s']))}: pipeline "
            f"runs {[round(r, 3) for r in pipe['runs_mpx_s']]} Mpx/s, reference runs "
            f"{[round(r, 3) for r in ref['runs_mpx_s']]} Mpx/s, pipeline / reference per pair "
            f"{[round(r, 3) for r in ref['pair_ratios']]}; their label maps are equal on "
            f"{_f(ref['labels_equal_to_pipeline_pct'], 3)} % of pixels.")]
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {_f(v, 3)} |" for k, v in doc["ratios"].items()]
    for name in _PEERS:
        if doc.get(name):
            lines.append(f"| {name} labels equal to ours (% of pixels) | "
                         f"{_f(doc[name]['agreement_with_ours_pct'], 2)} |")
    share_head = ("| model's share of the run's own time (robust to load changing between "
                  "runs) | % |")
    lines += ["", share_head, "|---|---|"]
    lines += [f"| {k} | {_f(v, 1)} |" for k, v in doc["model_share_pct"].items()]
    ov = doc["overhead"]
    lines += [
        "",
        (f"Per-task overhead: {_f(doc['overhead_pct'], 2)} % = queue gap {_f(ov['queue_gap_s'])} s "
        f"+ job table {_f(ov['job_table_s'])} s + blob store {_f(ov['storage_s'])} s per task of "
        f"{_f(ov['task_s'], 2)} s ({ov['definition']})."),
        (f"Pipeline: {pipe['rows']} rows on {pipe['workers_used']} workers, "
        f"{_f(pipe['seconds'], 1)} s end to end, submit -> first row "
        f"{_f(pipe['submit_to_first_row_s'], 2)} s, reducer {_f(pipe['reduce_s'], 2)} s, "
        f"last row done -> succeeded {_f(pipe.get('after_last_row_s'), 2)} s; "
        f"worker peak RSS {pipe['worker_peak_rss_mib']} MiB."),
        (f"segment_row alone: row {task['row']} ({_f(task['row_mpx'], 2)} Mpx, {task['tiles']} "
        f"tiles) {_f(task['seconds'], 2)} s: strip {_f(task['strip_s'], 2)} s (reading "
        f"{_f(task['read_s'], 2)} s, of which not overlapped {_f(task['read_wait_s'], 2)} s), "
        f"checkpoint write {_f(task['write_s'], 2)} s."),
    ]
    if doc.get("queued"):
        q = doc["queued"]
        lines.append(
            f"Queued jobs: {q['jobs']} jobs of the bench image submitted at once, "
            f"{_f(q['seconds'], 1)} s from the first submission to the last succeeded "
            f"({_f(q['mpx'], 1)} Mpx); each job succeeded at {q['job_seconds']} s; the model "
            f"busy {_f(q['model_busy_pct'], 1)} % of the workers' time (single job: "
            f"{_f(pipe['model_busy_pct'], 1)} %).")
    lines += _budget_lines(pipe.get("budget"))
    if doc["memory"]:
        lines += ["", ("| image | side (px) | worker row peak RSS (MiB) | reducer peak RSS (MiB) "
                      "| worker row (s) | reducer (s) |"), "|---|---|---|---|---|---|"]
        for size, m in doc["memory"].items():
            lines.append(f"| {size} Gpx | {m['side']} | {m['worker_rss_mib']} | "
                         f"{m['reducer_rss_mib']} | {_f(m['worker_row_s'], 1)} | "
                         f"{_f(m['reducer_s'], 1)} |")
        lines.append("")
        lines.append("Worker RSS: one interior row per size (a row's memory depends on the "
                     "width only); reducer RSS: the full image with synthetic row checkpoints.")
    lines += ["", "| phase | seconds | load before | load after |", "|---|---|---|---|"]
    for name, p in doc["phases"].items():
        lines.append(f"| {name} | {p['seconds']} | {p['load_before']} | {p['load_after']} |")
    return "\n".join(lines) + "\n"


#: What each stage of :func:`benchmarks.pipeline.worker_time_budget` is, for the table.
_STAGES = {
    "model": "model: forward passes (row.computed device_s)",
    "tiles": "rest of the strip loop: tile copies, placing cores, waiting for the reader",
    "checkpoints": "label and confidence strips, count table (write_s)",
    "partial": "microstructure partial (row.partial)",
    "row_rest": "rest of the row task: claim, job table, class counts, checksum",
    "between_rows": "rows phase outside row tasks: queue gaps, a worker out of rows",
    "before_rows": "submission to the first claim",
    "after_rows": "last row done to succeeded: the reducer, other workers idle",
}


def _budget_lines(budget: dict | None) -> list[str]:
    """The worker-time budget of the pipeline run as a Markdown table (none if absent)."""
    if not budget:
        return []
    lines = ["", (f"Worker time of the pipeline run: {budget['workers']} workers x end-to-end "
                  f"time = {_f(budget['total_s'], 1)} s, by stage (from the workers' logs; "
                  f"{budget['rows_logged']} rows):"), "",
             "| stage | seconds | % of worker time |", "|---|---|---|"]
    for name, stage in budget["stages"].items():
        lines.append(f"| {_STAGES.get(name, name)} | {_f(stage['seconds'], 2)} | "
                     f"{_f(stage['pct'], 1)} |")
    if budget.get("reducer"):
        parts = ", ".join(f"{k} {_f(v, 2)}" for k, v in budget["reducer"].items())
        lines += ["", f"Reducer (wall s; the products overlap in threads): {parts}."]
    return lines
