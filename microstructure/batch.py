"""One table for a batch of sections: a row per job with its phase fractions, porosity, pellet
count and oxidised share, so a laboratory that submitted a day's pellets reads them side by
side in one spreadsheet (``GET /v1/batches/{id}/results.csv``).

Every figure is taken from, or pooled exactly from, the job's own ``fractions.json`` and
``microstructure.json``: the pooled porosity and oxidised share are pixel sums over the
section's pellets, never means of per-pellet percentages (a small pellet weighs by its
pixels, as in Nellros & Thurley 2011's per-pellet figures summed over a section).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.job_warnings import warning_codes

__all__ = ["BATCH_FIELDS", "BatchEntry", "batch_csv", "section_figures"]

#: The fixed leading columns of the batch table; per-class and label columns follow.
BATCH_FIELDS = (
    "job_id", "source", "status", "error", "created_at", "model", "pixel_size_um", "width_px",
    "height_px", "pellets", "pellet_area_px", "pellet_area_mm2", "porosity_open_percent",
    "porosity_closed_percent", "oxidised_share_percent", "nodata_px", "significant_bits",
    "warnings", "scene",
)


@dataclass(frozen=True)
class BatchEntry:
    """One job of a batch as the table needs it.

    Attributes:
        job_id, source, status, created_at: The job's id, source URL, status and creation
            time (ISO 8601 text).
        model: ``name:version`` of its model package.
        error: Why it failed, or None.
        labels: The job's labels (``{"sample": "P-0042"}``), one column each.
        fractions: Its ``fractions.json`` document, None until it succeeded.
        microstructure: Its ``microstructure.json`` document, None until it succeeded (or
            for a job reduced before microstructure existed).
        scene: The image of a multi-image OME-TIFF the job read (its spec's), or None.
    """

    job_id: str
    source: str
    status: str
    created_at: str
    model: str
    error: str | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)
    fractions: Mapping[str, Any] | None = None
    microstructure: Mapping[str, Any] | None = None
    scene: int | None = None


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def section_figures(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A section's pellet figures pooled over its pellets, from its ``microstructure.json``.

    Args:
        doc: A ``microstructure.json`` document (docs/microstructure.md, version 1).

    Returns:
        ``{"pellets": int, "pellet_area_px": int, "pellet_area_mm2": float | None,
        "porosity_open_percent", "porosity_closed_percent", "oxidised_share_percent"}``:
        open porosity = inside mount pixels / pellet pixels x 100 over all pellets; closed =
        pore-class pixels / pellet pixels x 100 (None without a pore class); oxidised share =
        hematite / (hematite + magnetite) pixels x 100 (None where ``oxidation`` is null or
        the pellets hold neither); every percentage None without pellets. Fragments are left
        out, as in each pellet's own figures.
    """
    pellets = doc.get("pellets") or []
    area = sum(int(p["area_px"]) for p in pellets)

    def pooled(names: Sequence[str]) -> int:
        return sum(int(p["pixels"].get(n, 0)) for p in pellets for n in names)

    size = doc.get("pixel_size_um")
    oxidation = doc.get("oxidation")
    oxidised = None
    if oxidation:
        hem = pooled([oxidation["oxidised"]])
        oxidised = _percent(hem, hem + pooled([oxidation["unoxidised"]]))
    pores = doc.get("pore_classes") or []
    return {
        "pellets": len(pellets),
        "pellet_area_px": area,
        "pellet_area_mm2": None if size is None else area * float(size) ** 2 / 1e6,
        "porosity_open_percent": _percent(pooled(doc.get("mount_classes") or []), area),
        "porosity_closed_percent": _percent(pooled(pores), area) if pores else None,
        "oxidised_share_percent": oxidised,
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def batch_csv(entries: Sequence[BatchEntry]) -> str:
    """The batch table as CSV text: one line per entry, in the given order.

    Columns: :data:`BATCH_FIELDS`, then ``percent_of_image_<class>`` (from ``fractions.json``)
    and ``percent_of_pellets_<class>`` (non-mount classes, from ``microstructure.json``) for
    every class of any entry in order of first appearance, then ``label_<key>`` for every
    label key; ``warnings`` holds the codes of the job's warnings (:mod:`core.job_warnings`)
    joined by ``;``; ``scene`` the image of a multi-image OME-TIFF the job read. Cells a job
    does not have (not succeeded yet, no microstructure, a class its
    model lacks, no pixel size) are empty; floats at full precision (``repr``).

    Raises:
        KeyError: a document lacks a field its schema has (a damaged document).
    """
    classes: dict[str, None] = {}
    pellet_classes: dict[str, None] = {}
    labels: dict[str, None] = {}
    rows = []
    for e in entries:
        row: dict[str, Any] = {
            "job_id": e.job_id, "source": e.source, "status": e.status, "error": e.error,
            "created_at": e.created_at, "model": e.model, "scene": e.scene,
        }
        if e.fractions is not None:
            row.update(pixel_size_um=e.fractions["pixel_size_um"],
                       width_px=e.fractions["width"], height_px=e.fractions["height"],
                       nodata_px=e.fractions.get("nodata_pixels", 0),
                       significant_bits=e.fractions.get("significant_bits"),
                       warnings=warning_codes(e.fractions.get("warnings")))
            for c in e.fractions["classes"]:
                classes.setdefault(c["name"], None)
                row[f"percent_of_image_{c['name']}"] = float(c["percent"])
        if e.microstructure is not None:
            row.update(section_figures(e.microstructure))
            for c in e.microstructure["classes"]:
                if c["percent_of_pellets"] is not None and c["role"] != "mount":
                    pellet_classes.setdefault(c["name"], None)
                    row[f"percent_of_pellets_{c['name']}"] = float(c["percent_of_pellets"])
        for key, value in e.labels.items():
            labels.setdefault(key, None)
            row[f"label_{key}"] = value
        rows.append(row)
    fields = [*BATCH_FIELDS, *(f"percent_of_image_{n}" for n in classes),
              *(f"percent_of_pellets_{n}" for n in pellet_classes),
              *(f"label_{k}" for k in labels)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in fields})
    return buf.getvalue()
