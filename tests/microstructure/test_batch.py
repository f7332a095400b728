"""The batch table (microstructure.batch): a section's figures pooled over its pellets against
the synthetic section's drawn truth and the label map's own pixels, and the CSV's columns
across jobs of different models, states and labels."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from microstructure import BatchEntry, batch_csv, merge_partials, row_partial, section_figures
from microstructure.batch import BATCH_FIELDS
from microstructure.fractions import fractions_document, label_counts
from microstructure.synthetic import HEMATITE, MAGNETITE, SYNTHETIC_CLASSES, make_section
from models.package import ClassInfo

#: The synthetic class table as a model package declares it (what fractions.json is made of).
MODEL_CLASSES = [ClassInfo(index=c.value, name=c.name, rgb=c.colour, role=c.role,
                           label_value=c.value)
                 for c in SYNTHETIC_CLASSES]

MODEL = {"name": "m", "version": "1", "sha256": "0" * 64}


def _docs(section, ps=2.0, job_id="J"):
    labels = section.render()
    H, W = labels.shape
    parts = [row_partial(labels[y:y + 37], y0=y, image_shape=(H, W), classes=SYNTHETIC_CLASSES)
             for y in range(0, H, 37)]
    micro = merge_partials(parts, classes=SYNTHETIC_CLASSES, pixel_size_um=ps)
    fractions = fractions_document(job_id, MODEL, W, H, label_counts(labels, 4),
                                   MODEL_CLASSES, pixel_size_um=ps)
    return labels, fractions, micro


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_section_figures_pool_pixels_over_pellets_as_drawn():
    section = make_section(300, 520, [(140, 130, 120, 30), (150, 390, 70, 20)],
                           pores_per_pellet=25, seed=3)
    labels, _, micro = _docs(section, ps=2.0)
    truth = section.truth()["pellets"]
    got = section_figures(micro)
    area = sum(p["area_px"] for p in truth)
    assert got["pellets"] == 2 and got["pellet_area_px"] == area
    assert got["pellet_area_mm2"] == pytest.approx(area * 4.0 / 1e6)
    assert got["porosity_open_percent"] == pytest.approx(
        100 * sum(p["open_px"] for p in truth) / area)
    assert got["porosity_closed_percent"] == pytest.approx(
        100 * sum(p["closed_px"] for p in truth) / area)
    hem, mag = int((labels == HEMATITE).sum()), int((labels == MAGNETITE).sum())
    assert got["oxidised_share_percent"] == pytest.approx(100 * hem / (hem + mag))
    # pooled by pixels: the big pellet weighs more than a mean of the two pellets' shares
    shares = [p["oxidised_share_percent"] for p in micro["pellets"]]
    assert got["oxidised_share_percent"] != pytest.approx(sum(shares) / 2, abs=1e-3)
    assert min(shares) < got["oxidised_share_percent"] < max(shares)


def test_section_without_pellets_pore_class_or_oxides_leaves_those_figures_empty():
    _, _, micro = _docs(make_section(60, 60, [(30, 30, 20, 5)], pores_per_pellet=3))
    assert section_figures({**micro, "pellets": []}) == {
        "pellets": 0, "pellet_area_px": 0, "pellet_area_mm2": 0.0,
        "porosity_open_percent": None, "porosity_closed_percent": None,
        "oxidised_share_percent": None}
    bare = section_figures({**micro, "pore_classes": [], "oxidation": None, "pixel_size_um": None})
    assert bare["porosity_closed_percent"] is None and bare["oxidised_share_percent"] is None
    assert bare["pellet_area_mm2"] is None and bare["porosity_open_percent"] is not None


def test_batch_csv_puts_sections_side_by_side_with_empty_cells_for_what_a_job_lacks():
    _, f1, m1 = _docs(make_section(200, 200, [(100, 100, 80, 20)], seed=1), ps=1.5, job_id="a")
    _, f2, m2 = _docs(make_section(200, 200, [(100, 100, 60, 30)], seed=2), ps=None, job_id="b")
    other = {**f2, "classes": [*f2["classes"], {"index": 4, "name": "wüstite", "pixels": 0,
                                                "percent": 0.0, "percent_of_pellet": 0.0}],
             "nodata_pixels": 1234, "significant_bits": 12,
             "warnings": [{"code": "pixel_size_unlike_model", "message": "m"},
                          {"code": "pixels_not_square", "message": "n"}]}
    entries = [
        BatchEntry("a", "s3://lab/P-1.tif", "succeeded", "2026-12-06T10:00:00", "m:1",
                   labels={"sample": "P-1"}, fractions=f1, microstructure=m1),
        BatchEntry("b", "s3://lab/P-2.tif", "succeeded", "2026-12-06T10:01:00", "n:2",
                   labels={"sample": "P-2", "furnace": "K3"}, fractions=other,
                   microstructure=m2, scene=0),
        BatchEntry("c", "s3://lab/P-3.tif", "failed", "2026-12-06T10:02:00", "m:1",
                   error="row 2 failed after 3 attempts: RuntimeError: x"),
        BatchEntry("d", "s3://lab/P-4.tif", "running", "2026-12-06T10:03:00", "m:1"),
    ]
    text = batch_csv(entries)
    header = text.splitlines()[0].split(",")
    classes = [c.name for c in SYNTHETIC_CLASSES]
    assert header == [*BATCH_FIELDS, *(f"percent_of_image_{n}" for n in [*classes, "wüstite"]),
                      *(f"percent_of_pellets_{n}" for n in classes[1:]),
                      "label_sample", "label_furnace"]
    a, b, c, d = _rows(text)
    assert [r["job_id"] for r in (a, b, c, d)] == ["a", "b", "c", "d"]
    assert float(a["pixel_size_um"]) == 1.5 and b["pixel_size_um"] == ""
    assert (a["nodata_px"], a["significant_bits"]) == ("0", "")  # imaged whole, 8-bit
    assert (b["nodata_px"], b["significant_bits"]) == ("1234", "12")
    assert c["nodata_px"] == c["significant_bits"] == ""  # failed: no fractions
    assert (a["warnings"], b["warnings"]) == ("", "pixel_size_unlike_model;pixels_not_square")
    assert (a["scene"], b["scene"], c["scene"]) == ("", "0", "")  # scene 0 is not empty
    assert float(a["pellet_area_mm2"]) == pytest.approx(int(a["pellet_area_px"]) * 2.25e-6)
    assert b["pellet_area_mm2"] == "" and b["pellet_area_px"] != ""
    for row, f, m in ((a, f1, m1), (b, f2, m2)):
        for cls in f["classes"]:
            assert float(row[f"percent_of_image_{cls['name']}"]) == cls["percent"]  # repr: exact
        for cls in m["classes"][1:]:
            assert float(row[f"percent_of_pellets_{cls['name']}"]) == cls["percent_of_pellets"]
        assert float(row["porosity_open_percent"]) == section_figures(m)["porosity_open_percent"]
    assert a["percent_of_image_wüstite"] == "" and float(b["percent_of_image_wüstite"]) == 0.0
    assert a["label_furnace"] == "" and b["label_furnace"] == "K3"
    assert c["error"].startswith("row 2 failed") and c["pellets"] == c["percent_of_image_pore"] == ""
    assert d["status"] == "running" and d["porosity_open_percent"] == "" and d["error"] == ""
    assert np.isclose(sum(float(a[f"percent_of_image_{n}"]) for n in classes), 100.0)


def test_a_job_reduced_before_microstructure_keeps_its_fractions():
    _, f, _ = _docs(make_section(100, 100, [(50, 50, 40, 10)], pores_per_pellet=2))
    (row,) = _rows(batch_csv([BatchEntry("a", "x", "succeeded", "t", "m:1", fractions=f)]))
    assert float(row["percent_of_image_epoxy"]) == f["classes"][0]["percent"]
    assert row["pellets"] == "" and row["porosity_open_percent"] == ""
