"""Microstructure at 1 Gpx: the row partials' time and size, and the merge's time and memory.

A synthetic section (``microstructure.synthetic``: a grid of pellets with hematite shells,
one pore of every kind in each cell of a 60 px grid, plus isolated hematite pixels in the
magnetite at a density of 1e-3, like a noisy segmentation) is rendered strip by strip (never
held whole). For each strip: ``row_partial`` is timed and its serialised partial written to
``WORK/rows/``, as a row worker would. Then, in a fresh process (the reducer's situation: it
loads the partials from the store), the partials are read, merged (``merge_partials``) and
rendered (``render_outputs``), timed, with that process's peak RSS (VmHWM). The pellets,
their areas, the pore count and the oxidation fronts are checked against the section's truth.

Run: ``python -m benchmarks.microstructure_merge [--side 32768] [--rows 2048] [--work DIR]
[--json FILE]`` (heavy: run it under ``flock /work/heavy.lock nice -n 5``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import peak_rss_mib
from microstructure import RowPartial, merge_partials, render_outputs, row_partial
from microstructure.synthetic import HEMATITE, MAGNETITE, SYNTHETIC_CLASSES, make_section

CLASSES = list(SYNTHETIC_CLASSES)
SPECK_DENSITY = 1e-3


def section(side: int, grid: int = 5):
    """A side x side px section with grid x grid pellets (radius 0.45 of a cell)."""
    cell = side // grid
    r = int(cell * 0.45)
    pellets = [(cell // 2 + i * cell, cell // 2 + j * cell, r, r // 5)
               for i in range(grid) for j in range(grid)]
    return make_section(side, side, pellets, max_pore_px=30, pore_spacing=60, seed=7)


def _strip(sec, y0: int, y1: int) -> np.ndarray:
    lab = sec.render(y0, y1)
    rng = np.random.default_rng(y0)
    idx = rng.integers(0, lab.size, int(lab.size * SPECK_DENSITY))
    flat = lab.reshape(-1)
    flat[idx[flat[idx] == MAGNETITE]] = HEMATITE
    return lab


def rows(side: int, height: int, work: Path) -> dict:
    sec = section(side)
    (work / "rows").mkdir(parents=True, exist_ok=True)
    times, cpu, sizes, render_s = [], [], [], 0.0
    for i, y0 in enumerate(range(0, side, height)):
        t = time.perf_counter()
        lab = _strip(sec, y0, min(side, y0 + height))
        render_s += time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        p = row_partial(lab, y0=y0, image_shape=(side, side), classes=CLASSES)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        data = p.to_bytes()
        sizes.append(len(data))
        (work / "rows" / f"{i:05d}.npz").write_bytes(data)
    truth = sec.truth()
    return {"strips": len(times), "row_partial_s": {"mean": float(np.mean(times)),
                                                   "max": float(np.max(times)),
                                                   "total": float(np.sum(times)),
                                                   "cpu_total": float(np.sum(cpu))},
            "partial_mib": {"mean": float(np.mean(sizes)) / 2**20, "total": float(np.sum(sizes)) / 2**20},
            "render_s": render_s, "rows_process_peak_rss_mib": peak_rss_mib(),
            "truth": {"pellets": len(truth["pellets"]),
                      "areas": [p["area_px"] for p in truth["pellets"]],
                      "shells_px": [p["shell_px"] for p in truth["pellets"]],
                      "radii_px": [p["radius_px"] for p in truth["pellets"]],
                      "pores": len(truth["pore_areas_px"])}}


def merge(work: Path) -> dict:
    t = time.perf_counter()
    parts = [RowPartial.from_bytes(f.read_bytes()) for f in sorted((work / "rows").glob("*.npz"))]
    load_s = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    report = merge_partials(parts, classes=CLASSES, pixel_size_um=1.0)
    merge_s, merge_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    files = render_outputs(report)
    outputs_s, outputs_cpu = time.perf_counter() - t, time.process_time() - c
    return {"load_s": load_s, "merge_s": merge_s, "merge_cpu_s": merge_cpu,
            "outputs_s": outputs_s, "outputs_cpu_s": outputs_cpu,
            "merge_process_peak_rss_mib": peak_rss_mib(),
            "components": int(sum(p.comp_class.size for p in parts)),
            "pellets": len(report["pellets"]), "areas": [p["area_px"] for p in report["pellets"]],
            "pores": report["size_distributions"]["pore"]["count"],
            "hematite_objects": report["size_distributions"]["hematite"]["count"],
            "oxidation_fronts_px": [p["oxidation_front_px"] for p in report["pellets"]],
            "json_kib": len(files["microstructure.json"]) / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="all", choices=["all", "merge"])
    ap.add_argument("work_dir", nargs="?", default=None)
    ap.add_argument("--side", type=int, default=32768, help="image side (px); 32768 = 1.07 Gpx")
    ap.add_argument("--rows", type=int, default=2048, help="strip height (px)")
    ap.add_argument("--work", default=None, help="folder for the partials (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the result here")
    a = ap.parse_args(argv)
    if a.mode == "merge":
        print(json.dumps(merge(Path(a.work_dir))))
        return 0
    with tempfile.TemporaryDirectory(dir=a.work) as d:
        work = Path(d)
        t = time.perf_counter()
        out = {"side": a.side, "pixels": a.side * a.side, "rows": a.rows,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
               "load_average_start": os.getloadavg()}
        out.update(rows(a.side, a.rows, work))
        res = subprocess.run([sys.executable, "-m", "benchmarks.microstructure_merge", "merge", str(work)],
                             capture_output=True, text=True, check=True)
        out["merge"] = json.loads(res.stdout.strip().splitlines()[-1])
        out["wall_s"] = time.perf_counter() - t
        out["load_average_end"] = os.getloadavg()
        m, tr = out["merge"], out["truth"]
        # the oxidation front against the drawn shell (microstructure/oxidation.py: ±8 px);
        # the hematite specks in the core move it inwards by their area over the front's
        # circumference: at most SPECK_DENSITY * radius / 2
        errors = [f - s for f, s in zip(m["oxidation_fronts_px"], tr["shells_px"], strict=True)]
        out["oxidation_front_error_px"] = {"min": min(errors), "max": max(errors)}
        speck_shift = SPECK_DENSITY * max(tr["radii_px"]) / 2
        out["checks"] = {"pellets": m["pellets"] == tr["pellets"], "areas": m["areas"] == tr["areas"],
                         "pores": m["pores"] == tr["pores"],
                         "oxidation_fronts": max(abs(e) for e in errors) <= 8 + speck_shift}
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0 if all(out["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
