"""Phase fractions from exact pixel counts (microstructure.fractions)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from microstructure.fractions import (
    fractions_csv,
    fractions_document,
    label_counts,
    phase_fractions,
)
from models.package import ClassInfo

CLASSES = [
    ClassInfo(index=0, name="epoxy", rgb=(0, 0, 0), label_value=0, pellet=False),
    ClassInfo(index=1, name="hematite", rgb=(255, 0, 0), label_value=1),
    ClassInfo(index=2, name="magnetite", rgb=(0, 255, 0), label_value=2),
    ClassInfo(index=3, name="pore", rgb=(0, 0, 255), label_value=3, pellet=False),
    ClassInfo(index=4, name="slag", rgb=(255, 255, 0), label_value=4),
]
COUNTS = [400, 300, 200, 60, 40]  # 1000 px; pellet classes 1, 2, 4 hold 540
MODEL = {"name": "pellet-unet", "version": "1", "sha256": "ab" * 32}


def test_percent_sums_to_100_and_matches_counts():
    rows = phase_fractions(COUNTS, CLASSES)
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["name"] for r in rows] == [c.name for c in CLASSES]
    assert [r["pixels"] for r in rows] == COUNTS
    assert sum(r["percent"] for r in rows) == pytest.approx(100.0)
    assert rows[0]["percent"] == pytest.approx(40.0)
    assert rows[4]["percent"] == pytest.approx(4.0)


def test_percent_of_pellet_excludes_non_pellet_classes():
    rows = phase_fractions(COUNTS, CLASSES)
    assert rows[0]["percent_of_pellet"] is None  # epoxy
    assert rows[3]["percent_of_pellet"] is None  # pore
    pellet = [r for r in rows if r["percent_of_pellet"] is not None]
    assert [r["name"] for r in pellet] == ["hematite", "magnetite", "slag"]
    assert sum(r["percent_of_pellet"] for r in pellet) == pytest.approx(100.0)
    assert rows[1]["percent_of_pellet"] == pytest.approx(100 * 300 / 540)


def test_no_pellet_pixels_gives_zero_not_division_error():
    rows = phase_fractions([10, 0, 0, 5, 0], CLASSES)
    assert [r["percent_of_pellet"] for r in rows] == [None, 0.0, 0.0, None, 0.0]
    empty = phase_fractions([0] * 5, CLASSES)
    assert all(r["percent"] == 0.0 for r in empty)


@pytest.mark.parametrize(
    ("counts", "error", "match"),
    [
        ([1, 2, 3], ValueError, "3 counts for 5 classes"),
        ([1, 2, -3, 4, 5], ValueError, "negative"),
        ([1, 2, 3.5, 4, 5], TypeError, "not an integer"),
    ],
)
def test_bad_counts_raise(counts, error, match):
    with pytest.raises(error, match=match):
        phase_fractions(counts, CLASSES)


def test_numpy_counts_are_accepted_and_become_ints():
    rows = phase_fractions(np.array(COUNTS, dtype=np.int64), CLASSES)
    assert all(type(r["pixels"]) is int for r in rows)


def test_document_fields_and_json_serialisable():
    doc = fractions_document("job-1", MODEL, 40, 25, COUNTS, CLASSES)
    assert doc["job_id"] == "job-1"
    assert doc["model"] == MODEL
    assert (doc["width"], doc["height"], doc["pixels_total"]) == (40, 25, 1000)
    assert [c["pixels"] for c in doc["classes"]] == COUNTS
    assert json.loads(json.dumps(doc)) == doc


def test_inference_summary_groups_rows_by_how_they_were_computed():
    from microstructure.fractions import inference_summary

    bf16 = {"runtime": "openvino", "device": "cpu", "precision": "bf16", "f32_convs": 9,
            "tta": "none", "threads": 1}  # keys outside INFERENCE_FIELDS are left out
    f32 = {**bf16, "precision": "f32", "f32_convs": 0}
    summary = inference_summary([bf16, f32, None, bf16, f32])
    assert summary == [
        {"runtime": "openvino", "device": "cpu", "precision": "bf16", "f32_convs": 9,
         "tta": "none", "rows": [0, 3]},
        {"runtime": "openvino", "device": "cpu", "precision": "f32", "f32_convs": 0,
         "tta": "none", "rows": [1, 4]},
        {"runtime": None, "device": None, "precision": None, "f32_convs": None, "tta": None,
         "rows": [2]},
    ]
    assert inference_summary([]) == []
    doc = fractions_document("job-1", MODEL, 40, 25, COUNTS, CLASSES, row_inference=[f32])
    assert doc["inference"] == [{**{k: f32[k] for k in summary[0] if k != "rows"}, "rows": [0]}]
    assert "inference" not in fractions_document("job-1", MODEL, 40, 25, COUNTS, CLASSES)


def test_document_rejects_counts_that_do_not_cover_the_image():
    with pytest.raises(ValueError, match=r"1000 pixels.*1001"):
        fractions_document("job-1", MODEL, 1001, 1, COUNTS, CLASSES)
    with pytest.raises(ValueError, match="sha256"):
        fractions_document("job-1", {"name": "m", "version": "1"}, 40, 25, COUNTS, CLASSES)


def test_csv_round_trip():
    doc = fractions_document("job-1", MODEL, 40, 25, COUNTS, CLASSES)
    text = fractions_csv(doc)
    assert text.splitlines()[0] == "index,name,pixels,percent,percent_of_pellet"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(CLASSES)
    for row, expected in zip(rows, doc["classes"], strict=True):
        assert int(row["index"]) == expected["index"]
        assert row["name"] == expected["name"]
        assert int(row["pixels"]) == expected["pixels"]
        assert float(row["percent"]) == expected["percent"]  # full precision
        if expected["percent_of_pellet"] is None:
            assert row["percent_of_pellet"] == ""
        else:
            assert float(row["percent_of_pellet"]) == expected["percent_of_pellet"]


def test_csv_quotes_names_with_commas():
    classes = [ClassInfo(index=0, name="glass, silicate", rgb=(1, 2, 3), label_value=0)]
    doc = fractions_document("j", MODEL, 2, 2, [4], classes)
    rows = list(csv.DictReader(io.StringIO(fractions_csv(doc))))
    assert rows[0]["name"] == "glass, silicate"


def test_label_counts_matches_bincount_and_sums_to_size():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(37, 1001), dtype=np.uint8)
    counts = label_counts(labels, 7)
    assert counts == np.bincount(labels.ravel(), minlength=7).tolist()
    assert counts[5] == counts[6] == 0
    assert sum(counts) == labels.size
    assert all(type(c) is int for c in counts)


def test_label_counts_chunked_path(monkeypatch):
    from microstructure import fractions

    monkeypatch.setattr(fractions, "_CHUNK", 100)  # force many chunks
    labels = np.arange(1050, dtype=np.uint8).reshape(21, 50) % 3
    assert label_counts(labels, 3) == np.bincount(labels.ravel(), minlength=3).tolist()


def test_label_counts_rejects_out_of_range():
    with pytest.raises(ValueError, match="label value 5"):
        label_counts(np.array([[0, 5]], np.uint8), 5)
    with pytest.raises(ValueError, match="label value -1"):
        label_counts(np.array([[0, -1]], np.int16), 5)
    with pytest.raises(ValueError, match="integers"):
        label_counts(np.zeros((2, 2), np.float32), 5)
    assert label_counts(np.zeros((0, 4), np.uint8), 3) == [0, 0, 0]


def test_no_mount_class_gives_no_percent_of_pellet_and_says_why():
    classes = [ClassInfo(index=i, name=n, rgb=(i, i, i), label_value=i)
               for i, n in enumerate(["background", "oxide", "crack"])]
    doc = fractions_document("job-1", MODEL, 10, 10, [50, 30, 20], classes)
    assert [c["percent_of_pellet"] for c in doc["classes"]] == [None, None, None]
    assert [c["percent"] for c in doc["classes"]] == [50.0, 30.0, 20.0]
    assert doc["mount_class_declared"] is False
    assert "no mount class" in doc["pellet_note"]
    rows = list(csv.DictReader(io.StringIO(fractions_csv(doc))))
    assert [r["percent_of_pellet"] for r in rows] == ["", "", ""]


def test_mount_role_declares_the_mount_and_pixel_size_is_recorded():
    classes = [ClassInfo(index=0, name="epoxy", rgb=(0, 0, 0), label_value=0, role="mount"),
               ClassInfo(index=1, name="pore", rgb=(1, 1, 1), label_value=1, role="pore"),
               ClassInfo(index=2, name="hematite", rgb=(2, 2, 2), label_value=2)]
    doc = fractions_document("job-1", MODEL, 10, 10, [50, 10, 40], classes, pixel_size_um=0.5)
    assert doc["mount_class_declared"] is True
    assert "pellet_note" not in doc
    assert doc["pixel_size_um"] == 0.5
    # pores are part of the pellet: 10 of its 50 px
    assert [c["percent_of_pellet"] for c in doc["classes"]] == [None, 20.0, 80.0]
    assert fractions_document("job-1", MODEL, 10, 10, [50, 10, 40], classes)[
        "pixel_size_um"] is None
