"""Files and text from a ``microstructure.json`` document: the JSON itself, CSV tables, the
radial-profile plot (matplotlib, if installed) and a short summary for the command line."""

from __future__ import annotations

import csv
import io
import json

from microstructure.oxidation import FIELDS as OXIDATION_FIELDS


def _csv(rows: list[dict], fields: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in fields})
    return buf.getvalue().encode()


def _fmt(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def render_outputs(report: dict) -> dict[str, bytes]:
    """The output files of a document from :func:`~microstructure.merge.merge_partials`.

    Returns:
        File name -> bytes: ``microstructure.json`` (sorted keys, UTF-8), ``pellets.csv``
        (one row per pellet; phase columns ``pct_<class>``; the oxidised share and
        oxidation front where the document has ``oxidation``), ``size_distributions.csv``
        (one row per class and bin), ``boundaries.csv`` (one row per class pair),
        ``radial_profiles.csv`` (one row per pellet and band) and ``radial_profiles.png``
        (left out when matplotlib is not installed or there is no profile).
    """
    out: dict[str, bytes] = {
        "microstructure.json": json.dumps(report, indent=1, sort_keys=True,
                                          ensure_ascii=False).encode("utf-8"),
    }
    phase_names = [c["name"] for c in report["classes"] if c["role"] != "mount"]
    rows = []
    for p in report["pellets"]:
        r = {k: p[k] for k in ("id", "area_px", "area_mm2", "equivalent_diameter_px",
                               "equivalent_diameter_mm", "porosity_open_percent",
                               "porosity_closed_percent", "touches_image_border")}
        r.update({f"bbox_{k}": v for k, v in p["bbox"].items()})
        r.update({f"pct_{n}": p["phase_fractions_percent"].get(n) for n in phase_names})
        r.update({k: p.get(k) for k in OXIDATION_FIELDS})
        rows.append(r)
    oxidation = list(OXIDATION_FIELDS) if report.get("oxidation") else []
    out["pellets.csv"] = _csv(rows, [
        "id", "area_px", "area_mm2", "equivalent_diameter_px", "equivalent_diameter_mm",
        "porosity_open_percent", "porosity_closed_percent",
        *[f"pct_{n}" for n in phase_names], *oxidation, "bbox_x", "bbox_y", "bbox_width",
        "bbox_height", "touches_image_border"])
    rows = []
    for name, d in report["size_distributions"].items():
        for b in d["bins"]:
            rows.append({"class": name, "count_total": d["count"], "d10_um": d["d10_um"],
                         "d50_um": d["d50_um"], "d90_um": d["d90_um"], "d10_px": d["d10_px"],
                         "d50_px": d["d50_px"], "d90_px": d["d90_px"], **b})
    out["size_distributions.csv"] = _csv(rows, [
        "class", "from_um", "to_um", "from_px", "to_px", "count", "area_px", "area_percent",
        "cumulative_area_percent", "count_total", "d10_um", "d50_um", "d90_um", "d10_px",
        "d50_px", "d90_px"])
    out["boundaries.csv"] = _csv(report["boundaries"], [
        "a", "b", "edges", "length_px", "length_um", "percent_of_all", "percent_of_a",
        "percent_of_b"])
    rows = []
    for prof in report["radial_profiles"]["pellets"]:
        for b in prof["bands"]:
            r = {"pellet": prof["pellet"], **{k: b[k] for k in ("band", "from_um", "to_um", "from_px",
                                                                "to_px", "pixels", "open_porosity_percent")}}
            r.update({f"pct_{n}": b["percent"].get(n) for n in phase_names})
            rows.append(r)
    out["radial_profiles.csv"] = _csv(rows, [
        "pellet", "band", "from_um", "to_um", "from_px", "to_px", "pixels",
        *[f"pct_{n}" for n in phase_names], "open_porosity_percent"])
    png = _radial_png(report, phase_names)
    if png is not None:
        out["radial_profiles.png"] = png
    return out


def _radial_png(report: dict, phase_names: list[str]) -> bytes | None:
    profiles = [p for p in report["radial_profiles"]["pellets"] if p["bands"]]
    if not profiles:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return None
    um = report["pixel_size_um"] is not None
    oxidised = (report.get("oxidation") or {}).get("oxidised")
    fronts = {p["id"]: p.get("oxidation_front_um" if um else "oxidation_front_px")
              for p in report["pellets"]}
    # one panel per phase (and the open pores), one line per pellet: a panel count that does
    # not grow with the number of pellets
    panels = [*phase_names, "open pores"]
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), dpi=100)
    for i, name in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for prof in profiles:
            x = [((b["from_um"] + b["to_um"]) / 2) if um else ((b["from_px"] + b["to_px"]) / 2)
                 for b in prof["bands"]]
            y = [b["open_porosity_percent"] if name == "open pores" else b["percent"][name]
                 for b in prof["bands"]]
            (line,) = ax.plot(x, y, marker="." if len(profiles) <= 5 else None, linewidth=1,
                              alpha=1.0 if len(profiles) <= 5 else 0.5,
                              label=f"pellet {prof['pellet']}")
            front = fronts.get(prof["pellet"]) if name == oxidised else None
            if front is not None and len(profiles) <= 5:  # the oxidation front, dashed
                ax.axvline(front, color=line.get_color(), linestyle="--", linewidth=0.8)
        ax.set_title(name)
        ax.set_xlabel(f"distance from surface ({'µm' if um else 'px'})")
        ax.set_ylabel("area % of pellet")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if i == 0 and len(profiles) <= 8:
            ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


#: Pellets listed one per line by :func:`summary_lines`; the rest are counted (every pellet is
#: in ``pellets.csv`` and ``microstructure.json``).
SUMMARY_PELLETS = 20


def summary_lines(report: dict, max_pellets: int = SUMMARY_PELLETS) -> list[str]:
    """A few lines for ``pelletseg run`` / ``pelletseg results`` / ``pelletseg analyze``: pixel
    size, pellets (area, diameter, porosity, oxidation front; the first ``max_pellets`` by id,
    then a count of the others), pore size D10/D50/D90 and the notes."""
    ps = report["pixel_size_um"]
    came = report.get("pixel_size_from")  # a job's: where planning found the size
    lines = [f"pixel size: {ps:g} µm/px" + (f", from {came}" if came else "")
             if ps is not None else "pixel size: unknown (figures in px)"]
    for n in report.get("notes", []):
        lines.append(f"note: {n}")
    pel = report["pellets"]
    if report.get("mount_class") is not None:
        lines.append(f"pellets: {len(pel)}" + (f" (+{report['fragments']['count']} fragments)"
                                                if report["fragments"]["count"] else ""))
    for p in pel[:max_pellets]:
        if ps is not None:
            size = f"{p['area_mm2']:.3f} mm², Ø {p['equivalent_diameter_mm']:.3f} mm"
        else:
            size = f"{p['area_px']} px, Ø {p['equivalent_diameter_px']:.1f} px"
        lines.append(f"  pellet {p['id']}: {size}, open porosity {_fmt(p['porosity_open_percent'])} %, "
                     f"closed porosity {_fmt(p['porosity_closed_percent'])} %"
                     + _oxidation_text(p, report.get("oxidation"), ps))
    if len(pel) > max_pellets:
        more = len(pel) - max_pellets
        lines.append(f"  ... and {more} more pellet{'s' if more > 1 else ''} (every pellet: pellets.csv)")
    unit = "µm" if ps is not None else "px"
    for name in report.get("pore_classes", []):
        d = report["size_distributions"][name]
        sfx = "um" if ps is not None else "px"
        lines.append(f"{name}: {d['count']} objects, D10/D50/D90 by area "
                     f"{_fmt(d[f'd10_{sfx}'], 1)}/{_fmt(d[f'd50_{sfx}'], 1)}/{_fmt(d[f'd90_{sfx}'], 1)} {unit}")
    return lines


def _oxidation_text(pellet: dict, classes: dict | None, ps: float | None) -> str:
    """``", oxidation front 61.2 µm (96 % of the hematite above it; hematite 48.0 % of
    hematite + magnetite)"``; without a front (a pellet too small for the 16 px block grid)
    only the share; ``""`` without either."""
    if classes is None or pellet.get("oxidised_share_percent") is None:
        return ""
    ox = classes["oxidised"]
    share = f"{ox} {pellet['oxidised_share_percent']:.1f} % of {ox} + {classes['unoxidised']}"
    if pellet.get("oxidation_front_px") is None:
        return f", {share}"
    front = (f"{pellet['oxidation_front_um']:.1f} µm" if ps is not None
             else f"{pellet['oxidation_front_px']:.1f} px")
    return (f", oxidation front {front} ({pellet['oxidation_front_shell_percent']:.0f} % of the "
            f"{ox} above it; {share})")
