"""Evaluation reports: ``metrics.json``, a PNG figure (confusion-matrix heatmaps, phase-fraction
bars) and a self-contained HTML page embedding the PNG.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no display, no
global backend switch), so reports can be written from workers and tests.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

METRICS_JSON = "metrics.json"
REPORT_PNG = "report.png"
REPORT_HTML = "report.html"


def _fmt(v, nd: int = 3, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:.{nd}f}" + (" %" if pct else "")


def _row_normalised(conf: np.ndarray) -> np.ndarray:
    rows = conf.sum(1, keepdims=True)
    return np.divide(conf, rows, out=np.zeros_like(conf, dtype=np.float64), where=rows > 0)


def _heatmap(ax, conf: np.ndarray, names: list[str], title: str) -> None:
    norm = _row_normalised(np.asarray(conf, dtype=np.float64))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    n = len(names)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("labelled")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{100 * norm[i, j]:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")


def render_png(metrics: dict[str, Any], path: str | Path, colours: list | None = None) -> Path:
    """Write the report figure: row-normalised confusion matrix (% of each labelled class),
    the same for the edge-weighted matrix, and labelled vs predicted phase fractions (%).

    Args:
        metrics: The dict of :func:`training.evaluation.evaluate_arrays`.
        colours: Optional RGB (0-255) per class for the predicted bars.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = metrics["classes"]
    fig = Figure(figsize=(16, 5.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    _heatmap(ax1, np.array(metrics["confusion_matrix"]), names,
             f"confusion, % of labelled (mIoU {_fmt(metrics['miou'])})")
    ew = metrics["edge_weighted"]
    _heatmap(ax2, np.array(ew["confusion_matrix"]), names,
             f"edge-weighted (N = {ew['edge_limit_px']} px, mIoU {_fmt(ew['miou'])})")
    fr = metrics["phase_fractions"]
    x = np.arange(len(names))
    lab = [f["labelled_percent"] or 0 for f in fr]
    pred = [f["predicted_percent"] or 0 for f in fr]
    ax3.bar(x - 0.2, lab, 0.4, label="labelled", color="0.6")
    bar_colours = [tuple(c / 255 for c in rgb) for rgb in colours] if colours else "tab:blue"
    ax3.bar(x + 0.2, pred, 0.4, label="predicted", color=bar_colours, edgecolor="black")
    for i, f in enumerate(fr):
        if f["abs_error_pp"] is not None:
            ax3.text(i, max(lab[i], pred[i]) + 0.5, f"{f['abs_error_pp']:.1f} pp", ha="center",
                     fontsize=7)
    ax3.set_xticks(x, names, rotation=45, ha="right")
    ax3.set_ylabel("% of labelled pixels")
    ax3.set_title(f"phase fractions (mean abs. error {_fmt(metrics['phase_fraction_mae_pp'], 2)}"
                  " pp)", fontsize=10)
    ax3.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _calibration_html(m: dict[str, Any]) -> str:
    """The calibration section (empty when the metrics have none)."""
    cal = m.get("calibration")
    if not cal:
        return ""
    summary = _table(["metric", "value"], [
        [f"expected calibration error ({cal['n_bins']} bins)", _fmt(cal["ece"], 4)],
        ["mean confidence", _fmt(cal["mean_confidence"], 4)],
        ["pixel accuracy", _fmt(cal["pixel_accuracy"], 4)],
        ["mIoU, all labelled pixels", _fmt(cal["miou_all"], 4)],
        *[[f"mIoU without the least-confident {e['excluded_percent']:g} % "
           f"(confidence < {_fmt(e['confidence_cut'], 3)})", _fmt(e["miou"], 4)]
          for e in cal["excluding_least_confident"]],
    ])
    bins = _table(["confidence bin", "pixels", "accuracy", "mean confidence"],
                  [[f"({b['lower']:.3f}, {b['upper']:.3f}]", f"{b['pixels']:,}",
                    _fmt(b["accuracy"]), _fmt(b["confidence"])] for b in cal["reliability"]])
    return (f"<h2>Calibration of the confidence</h2>{summary}<p>{html.escape(cal['method'])}"
            f".</p>{bins}")


def render_html(metrics: dict[str, Any], png: str | Path, path: str | Path) -> Path:
    """Write a self-contained HTML report: summary, per-class table, phase fractions,
    confusion matrix, per-image figures, and the PNG embedded as a data URI."""
    m, names = metrics, metrics["classes"]
    model, ds, inf = m.get("model", {}), m.get("dataset", {}), m.get("inference", {})
    summary = _table(["metric", "value"], [
        ["model", (f"{model.get('name', '?')} {model.get('version', '')} "
                   f"(sha256 {str(model.get('sha256', ''))[:12]})")],
        ["dataset / split", (f"{ds.get('name', '?')} / {ds.get('split', '?')} "
                             f"({m['images']} images)")],
        ["inference", (f"{inf.get('path', '?')}, tile {inf.get('tile_size')} px, "
                       f"halo {inf.get('halo')} px, {inf.get('device')}")],
        ["mIoU", _fmt(m["miou"], 4)], ["pixel accuracy", _fmt(m["pixel_accuracy"], 4)],
        ["mean class accuracy", _fmt(m["mean_class_accuracy"], 4)],
        [f"edge-weighted mIoU (N = {m['edge_weighted']['edge_limit_px']} px)",
         _fmt(m["edge_weighted"]["miou"], 4)],
        ["phase fractions, mean abs. error", _fmt(m["phase_fraction_mae_pp"], 2) + " pp"],
        ["labelled / ignored pixels", f"{m['labelled_pixels']:,} / {m['ignored_pixels']:,}"],
    ])
    per_class = _table(
        ["class", "IoU", "accuracy", "precision", "edge-weighted IoU", "labelled %",
         "predicted %", "abs. error (pp)"],
        [[c["name"], _fmt(c["iou"]), _fmt(c["accuracy"]), _fmt(c["precision"]),
          _fmt(m["edge_weighted"]["per_class_iou"][c["name"]]), _fmt(c["labelled_percent"], 2),
          _fmt(c["predicted_percent"], 2), _fmt(c["abs_error_pp"], 2)] for c in m["per_class"]])
    pellet = [f for f in m["phase_fractions"] if "labelled_percent_of_pellet" in f]
    pellet_table = _table(
        ["class", "labelled % of pellet", "predicted % of pellet", "abs. error (pp)"],
        [[f["name"], _fmt(f["labelled_percent_of_pellet"], 2),
          _fmt(f["predicted_percent_of_pellet"], 2), _fmt(f["abs_error_of_pellet_pp"], 2)]
         for f in pellet]) if pellet else ""
    conf = _table(["labelled \\ predicted", *names],
                  [[n, *[f"{v:,}" for v in row]] for n, row in zip(names, m["confusion_matrix"], strict=True)])
    images = _table(["image", "mIoU", "pixel accuracy",
                     *[f"{n} lab/pred %" for n in names]],
                    [[im["image"], _fmt(im["miou"]), _fmt(im["pixel_accuracy"]),
                      *[f"{_fmt(im['labelled_percent'][n], 1)} / "
                        f"{_fmt(im['predicted_percent'][n], 1)}" for n in names]]
                     for im in m["per_image"]])
    data = base64.b64encode(Path(png).read_bytes()).decode()
    title = html.escape(f"{model.get('name', 'model')} on {ds.get('name', 'dataset')}")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style>
</head><body><h1>{title}</h1>{summary}
<img alt="confusion matrices and phase fractions" src="data:image/png;base64,{data}">
<h2>Per class</h2>{per_class}{"<h2>Phase fractions of the pellet</h2>" + pellet_table
                                 if pellet_table else ""}
<h2>Confusion matrix (pixels; rows = labelled)</h2>{conf}
<h2>Per image</h2>{images}{_calibration_html(m)}
<p>Edge-weighted matrix: {html.escape(m["edge_weighted"]["formula"])}.</p>
</body></html>
"""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def write_report(metrics: dict[str, Any], out_dir: str | Path,
                 colours: list | None = None) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.png`` and ``report.html`` into ``out_dir`` (created).

    Returns:
        {"metrics": path, "png": path, "html": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mj = out / METRICS_JSON
    mj.write_text(json.dumps(metrics, indent=2) + "\n")
    png = render_png(metrics, out / REPORT_PNG, colours)
    page = render_html(metrics, png, out / REPORT_HTML)
    return {"metrics": mj, "png": png, "html": page}
