"""Microstructure figures against synthetic sections with known truth (microstructure.synthetic),
against whole-image direct computations, and whatever the row height."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from microstructure import (
    ClassInfo,
    RowPartial,
    classes_from_mappings,
    load_class_table,
    merge_partials,
    render_outputs,
    row_partial,
    summary_lines,
)
from microstructure.synthetic import (
    EPOXY,
    HEMATITE,
    MAGNETITE,
    PORE,
    SYNTHETIC_CLASSES,
    demo_section,
    make_section,
)

CLASSES = list(SYNTHETIC_CLASSES)


def _report(labels, row_height, classes=CLASSES, ps=None, band=20.0, shuffle=False, roundtrip=False):
    H, W = labels.shape
    parts = [row_partial(labels[y:y + row_height], y0=y, image_shape=(H, W), classes=classes)
             for y in range(0, H, row_height)]
    if roundtrip:
        parts = [RowPartial.from_bytes(p.to_bytes()) for p in parts]
    if shuffle:
        random.Random(1).shuffle(parts)
    return merge_partials(parts, classes=classes, pixel_size_um=ps, band_width_um=band)


@pytest.fixture(scope="module")
def section():
    return demo_section()


@pytest.fixture(scope="module")
def labels(section):
    return section.render()


@pytest.fixture(scope="module")
def report(labels):
    return _report(labels, 7)


def _ecd(a):
    return 2 * math.sqrt(a / math.pi)


def test_synthetic_section_has_every_kind_of_object(section, labels):
    """The truth covers what the figures must handle: U pores, rings with islands, pores
    crossing rows of 7 px, and rendering strip by strip equals rendering whole."""
    pores = [q for p in section.pellets for q in p.pores]
    assert sum(len(q.rects) == 3 for q in pores) >= 3  # U-shaped
    assert sum(q.island is not None for q in pores) >= 3  # rings around islands
    assert any(q.bbox()[0] // 7 != (q.bbox()[2] - 1) // 7 for q in pores)
    strips = np.concatenate([section.render(y, min(y + 13, section.height))
                             for y in range(0, section.height, 13)])
    assert np.array_equal(strips, labels)
    assert set(np.unique(labels)) == {EPOXY, PORE, HEMATITE, MAGNETITE}


def test_pellet_count_areas_and_porosity(section, report):
    truth = section.truth()
    assert report["mount_class"] == "epoxy"
    assert len(report["pellets"]) == len(truth["pellets"]) == 3
    assert report["fragments"]["count"] == 0
    for got, want in zip(report["pellets"], truth["pellets"], strict=True):
        assert got["area_px"] == want["area_px"]
        assert abs(want["area_px"] - math.pi * want["radius_px"] ** 2) < 0.01 * want["area_px"]
        assert got["equivalent_diameter_px"] == pytest.approx(_ecd(want["area_px"]))
        assert got["porosity_closed_percent"] == pytest.approx(100 * want["closed_px"] / want["area_px"])
        assert got["porosity_open_percent"] == pytest.approx(100 * want["open_px"] / want["area_px"])
        assert got["area_mm2"] is None and got["equivalent_diameter_mm"] is None
        total = sum(got["phase_fractions_percent"].values()) + got["porosity_open_percent"]
        assert total == pytest.approx(100.0)
        assert got["touches_image_border"] is False


def test_pore_count_and_diameters_exact(section, report):
    truth = section.truth()
    d = report["size_distributions"]["pore"]
    areas = sorted(truth["pore_areas_px"], key=_ecd)
    assert d["count"] == len(areas) and d["area_px"] == sum(areas)
    assert sum(b["count"] for b in d["bins"]) == len(areas)
    total = sum(areas)
    for q in (10, 50, 90):
        cum = 0
        for a in areas:  # smallest ECD with >= q % of the area in objects up to it
            cum += a
            if cum * 100 >= q * total:
                break
        assert d[f"d{q}_px"] == pytest.approx(_ecd(a))
        assert d[f"d{q}_um"] is None
    opened = report["size_distributions"]["epoxy"]
    assert opened["count"] == len(truth["open_pore_areas_px"])
    assert opened["area_px"] == sum(truth["open_pore_areas_px"])


def test_boundary_lengths_exact(labels, report):
    C = len(CLASSES)
    direct = np.zeros((C, C), dtype=np.int64)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        d = a != b
        np.add.at(direct, (np.minimum(a[d], b[d]), np.maximum(a[d], b[d])), 1)
    got = {(x["a"], x["b"]): x["edges"] for x in report["boundaries"]}
    want = {(CLASSES[i].name, CLASSES[j].name): int(direct[i, j])
            for i in range(C) for j in range(i + 1, C) if direct[i, j]}
    assert got == want
    assert sum(x["percent_of_all"] for x in report["boundaries"]) == pytest.approx(100.0)


def test_shell_boundary_within_one_band(section, report):
    truth = section.truth()
    band = report["radial_profiles"]["band_width_px"]
    for prof, want in zip(report["radial_profiles"]["pellets"], truth["pellets"], strict=True):
        bands = prof["bands"]
        assert bands[0]["percent"]["hematite"] > 50
        assert bands[-1]["percent"]["magnetite"] > 50
        front = next(b for b in bands if b["percent"]["magnetite"] > b["percent"]["hematite"])
        middle = (front["from_px"] + front["to_px"]) / 2
        assert abs(middle - want["shell_px"]) <= band
        assert bands[-1]["to_px"] >= want["radius_px"] - 2 * band  # surface to centre


@pytest.mark.parametrize("row_height", [3, 16, 64])
def test_identical_whatever_the_row_height(labels, report, row_height):
    full = _report(labels, labels.shape[0])
    got = _report(labels, row_height, shuffle=True, roundtrip=True)
    assert json.dumps(got, sort_keys=True) == json.dumps(full, sort_keys=True)
    assert json.dumps(report, sort_keys=True) == json.dumps(full, sort_keys=True)


def test_physical_units(labels, report):
    r = _report(labels, 64, ps=2.5, band=50.0)
    assert r["units"] == "µm" and r["pixel_size_um"] == 2.5
    for got, px in zip(r["pellets"], report["pellets"], strict=True):
        assert got["area_mm2"] == pytest.approx(px["area_px"] * 2.5**2 / 1e6)
        assert got["equivalent_diameter_mm"] == pytest.approx(px["equivalent_diameter_px"] * 2.5e-3)
    d = r["size_distributions"]["pore"]
    assert d["d50_um"] == pytest.approx(report["size_distributions"]["pore"]["d50_px"] * 2.5)
    assert r["radial_profiles"]["band_width_px"] == 20.0
    assert r["boundaries"][0]["length_um"] == r["boundaries"][0]["edges"] * 2.5
    assert report["units"] == "px" and report["pixel_size_um"] is None


def test_fragments_and_pellet_on_border():
    s = make_section(200, 260, [(100, 100, 90, 20)], pores_per_pellet=5, seed=3)
    lab = s.render()
    lab[5:8, 230:233] = HEMATITE  # a speck in the epoxy: a fragment, not a pellet
    lab[150:200, 220:260] = MAGNETITE  # a piece cut by the image border
    r = _report(lab, 9)
    assert [p["area_px"] for p in r["pellets"]] == [s.truth()["pellets"][0]["area_px"], 2000]
    assert r["pellets"][1]["touches_image_border"] is True
    assert r["fragments"] == {"count": 1, "area_px": 9, "area_mm2": None}


def test_two_mount_classes_give_the_same_pellets(labels, report):
    """Background (a second mount class) around the epoxy: still outside the pellets."""
    classes = [*CLASSES, ClassInfo("background", 9, "mount")]
    lab = labels.copy()
    lab[:3] = 9
    lab[:, -3:] = 9
    r = _report(lab, 11, classes=classes)
    assert [(p["area_px"], p["porosity_open_percent"]) for p in r["pellets"]] == \
        [(p["area_px"], p["porosity_open_percent"]) for p in report["pellets"]]
    assert r["size_distributions"]["background"]["count"] == 0  # outside: not open pores
    assert r["size_distributions"]["epoxy"]["count"] == report["size_distributions"]["epoxy"]["count"]


def test_no_mount_class_says_so(labels):
    classes = [ClassInfo(c.name, c.value, "phase" if c.role == "mount" else c.role) for c in CLASSES]
    r = _report(labels, 50, classes=classes)
    assert r["mount_class"] is None and r["pellets"] == []
    assert r["radial_profiles"]["pellets"] == []
    assert any("mount" in n for n in r["notes"])
    assert all(c["percent_of_pellets"] is None for c in r["classes"])
    assert any("mount" in line for line in summary_lines(r))


def test_outputs(report):
    files = render_outputs(report)
    assert json.loads(files["microstructure.json"]) == json.loads(json.dumps(report))
    header = files["pellets.csv"].decode().splitlines()[0].split(",")
    assert {"area_mm2", "porosity_open_percent", "pct_hematite"} <= set(header)
    assert len(files["pellets.csv"].decode().splitlines()) == 1 + len(report["pellets"])
    assert files["radial_profiles.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert files["boundaries.csv"].decode().count("\n") == 1 + len(report["boundaries"])
    lines = summary_lines(report)
    assert lines[0].startswith("pixel size: unknown") and "pellets: 3" in lines
    assert sum(line.startswith("  pellet ") for line in lines) == 3 and "more pellets" not in str(lines)
    # a mount of many pellets lists the first ones and counts the rest (all in pellets.csv)
    short = summary_lines(report, max_pellets=2)
    assert [line.split(":")[0] for line in short if line.startswith("  pellet ")] == [
        f"  pellet {p['id']}" for p in report["pellets"][:2]]
    assert "  ... and 1 more pellet (every pellet: pellets.csv)" in short
    assert len(short) == len(lines)  # one pellet line became the count line
    assert "  ... and 2 more pellets (every pellet: pellets.csv)" in summary_lines(report, 1)


def test_partial_is_the_same_whatever_the_class_values(labels):
    """Label values that are the class positions (0, 1, ...: CLASSES) take a path without a
    lookup table; other values (and a second mount class) go through it: the same partial
    either way, and a value of no class is refused on both paths."""
    assert [c.value for c in CLASSES] == list(range(len(CLASSES)))
    by_tens = [ClassInfo(c.name, 10 * (c.value + 1), c.role) for c in CLASSES]
    strip = labels[10:40]
    fast = row_partial(strip, y0=10, image_shape=labels.shape, classes=CLASSES)
    looked_up = row_partial((strip + 1) * 10, y0=10, image_shape=labels.shape, classes=by_tens)
    for name, v in vars(fast).items():
        if name != "class_values":
            assert np.array_equal(np.asarray(getattr(looked_up, name)), np.asarray(v)), name
    assert looked_up.class_values.tolist() == [10, 20, 30, 40]
    # a second mount class, absent from the strip: the same sets and components
    two = [*by_tens, ClassInfo("mount2", 7, "mount")]
    p2 = row_partial((strip + 1) * 10, y0=10, image_shape=labels.shape, classes=two)
    assert np.array_equal(p2.set_mount, fast.set_mount)
    assert np.array_equal(p2.set_counts[:, :-1], fast.set_counts) and not p2.set_counts[:, -1].any()
    assert np.array_equal(p2.comp_area, fast.comp_area)
    fast_bad, lookup_bad = strip.copy(), (strip + 1) * 10
    fast_bad[3, 5] = len(CLASSES)  # one past the last position
    lookup_bad[3, 5] = 200
    for values, classes in ((fast_bad, CLASSES), (lookup_bad, by_tens)):
        with pytest.raises(ValueError, match=r"label values \[(4|200)\] .* belong to no class"):
            row_partial(values, y0=10, image_shape=labels.shape, classes=classes)


def test_partial_round_trip_and_bad_bytes(labels):
    p = row_partial(labels[10:40], y0=10, image_shape=labels.shape, classes=CLASSES)
    q = RowPartial.from_bytes(p.to_bytes())
    again = row_partial(labels[10:40].copy(), y0=10, image_shape=labels.shape, classes=CLASSES)
    assert again.to_bytes() == p.to_bytes() == q.to_bytes()  # a row run twice writes the same bytes
    for name, v in vars(p).items():
        assert np.array_equal(np.asarray(getattr(q, name)), np.asarray(v)), name
    with pytest.raises(ValueError, match="not a microstructure row partial"):
        RowPartial.from_bytes(b"garbage")
    import io
    buf = io.BytesIO()
    np.savez(buf, __version__=np.int64(99))
    with pytest.raises(ValueError, match="version 99"):
        RowPartial.from_bytes(buf.getvalue())


@pytest.mark.parametrize("y0, rows", [(0, 48), (5, 40), (21, 7), (30, 2)])
def test_partial_block_grid_equals_a_direct_count_per_block(labels, y0, rows):
    """The block arrays of a strip that starts and ends inside a block row, on an image whose
    width is not a multiple of the block, against a plain loop over the blocks."""
    H, W = labels.shape[0], labels.shape[1] - 5  # W % 16 != 0
    image = np.ascontiguousarray(labels[:, :W])
    strip = image[y0:y0 + rows]
    p = row_partial(strip, y0=y0, image_shape=(H, W), classes=CLASSES)
    mount = strip == EPOXY
    for by in range(p.blk_counts.shape[0]):
        r0 = max((p.blk_y0 + by) * 16, y0) - y0
        r1 = min((p.blk_y0 + by + 1) * 16, y0 + rows) - y0
        for bx in range(p.blk_counts.shape[1]):
            block = strip[r0:r1, bx * 16:(bx + 1) * 16]
            want = [np.count_nonzero(block == c.value) for c in CLASSES]
            assert p.blk_counts[by, bx].tolist() == want, (by, bx)
    # set ids of the first and last rows: a block's smallest / largest pellet-set id there
    # is bounded by the block's own (which also sees the rows in between)
    for row, ids in ((0, p.first_set), (rows - 1, p.last_set)):
        by = (y0 + row) // 16 - p.blk_y0
        for bx in range(p.blk_counts.shape[1]):
            cols = slice(bx * 16, (bx + 1) * 16)
            pellet = ids[cols][~mount[row, cols]]
            if pellet.size:
                assert p.blk_set_min[by, bx] <= pellet.min()
                assert p.blk_set_max[by, bx] >= pellet.max()
    no_pellet = p.blk_counts[..., [i for i, c in enumerate(CLASSES) if c.role != "mount"]].sum(-1) == 0
    assert (p.blk_set_min[no_pellet] == -1).all() and (p.blk_set_max[no_pellet] == -1).all()
    assert (p.blk_set_min[~no_pellet] >= 0).all()
    assert (p.blk_set_max >= p.blk_set_min).all()
    assert p.blk_outside.sum() <= np.count_nonzero(mount)


def test_errors(labels):
    H, W = labels.shape
    parts = [row_partial(labels[y:y + 100], y0=y, image_shape=(H, W), classes=CLASSES)
             for y in range(0, H, 100)]
    with pytest.raises(ValueError, match=r"rows \[100, 200\) are missing"):
        merge_partials([parts[0], *parts[2:]], classes=CLASSES, pixel_size_um=None)
    with pytest.raises(ValueError, match="covered twice"):
        merge_partials([*parts, parts[1]], classes=CLASSES, pixel_size_um=None)
    with pytest.raises(ValueError, match="missing"):
        merge_partials(parts[:-1], classes=CLASSES, pixel_size_um=None)
    with pytest.raises(ValueError, match="another class table"):
        merge_partials(parts, classes=[*CLASSES, ClassInfo("x", 9)], pixel_size_um=None)
    with pytest.raises(ValueError, match="pixel size"):
        merge_partials(parts, classes=CLASSES, pixel_size_um=0)
    with pytest.raises(ValueError, match="no row partials"):
        merge_partials([], classes=CLASSES, pixel_size_um=None)
    bad = labels[:5].copy()
    bad[2, 3] = 7
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        row_partial(bad, y0=0, image_shape=(H, W), classes=CLASSES)
    with pytest.raises(ValueError, match="width"):
        row_partial(labels[:5, :10], y0=0, image_shape=(H, W), classes=CLASSES)
    with pytest.raises(ValueError, match="outside"):
        row_partial(labels[:5], y0=H - 2, image_shape=(H, W), classes=CLASSES)
    with pytest.raises(ValueError, match="uint8"):
        row_partial(labels[:5].astype(np.int32), y0=0, image_shape=(H, W), classes=CLASSES)


def test_class_tables(tmp_path):
    with pytest.raises(ValueError, match=r"'epoxy'.*role 'glue'"):
        ClassInfo("epoxy", 0, "glue")
    with pytest.raises(ValueError, match="value 300"):
        ClassInfo("x", 300)
    got = classes_from_mappings([
        {"index": 0, "name": "epoxy", "rgb": [1, 2, 3], "label_value": 0, "pellet": False},
        {"index": 1, "name": "pore", "role": "pore", "rgb": [0, 0, 0], "label_value": 5},
    ])
    assert got == [ClassInfo("epoxy", 0, "mount", (1, 2, 3)), ClassInfo("pore", 1, "pore", (0, 0, 0))]
    with pytest.raises(ValueError, match=r"classes\[1\]: value 0 is already used by classes\[0\]"):
        classes_from_mappings([{"name": "a", "value": 0}, {"name": "b", "value": 0}])
    f = tmp_path / "classes.yaml"
    f.write_text("classes:\n  - {name: epoxy, value: 0, role: mount}\n  - {name: mag, value: 3}\n")
    assert load_class_table(f) == [ClassInfo("epoxy", 0, "mount"), ClassInfo("mag", 3, "phase")]
    f.write_text("classes:\n  - {name: epoxy, value: 0, role: resin}\n")
    with pytest.raises(ValueError, match=r"classes.yaml: classes\[0\]: class 'epoxy': role 'resin'"):
        load_class_table(f)
    f.write_text("names: [a]\n")
    with pytest.raises(ValueError, match="'classes:' list"):
        load_class_table(f)
    with pytest.raises(ValueError, match="cannot read"):
        load_class_table(tmp_path / "missing.yaml")


def test_grid_placed_pores_and_tiny_images():
    """The benchmark's grid placement keeps the truth exact; a pore 40 px tall is one object in
    strips of 3 px; 1-row and 1-pixel images work."""
    s = make_section(160, 160, [(80, 80, 75, 15)], max_pore_px=10, pore_spacing=16, seed=5)
    truth = s.truth()
    assert len(s.pellets[0].pores) > 30
    r = _report(s.render(), 3)
    assert r["size_distributions"]["pore"]["count"] == len(truth["pore_areas_px"])
    assert r["size_distributions"]["pore"]["area_px"] == sum(truth["pore_areas_px"])
    assert r["pellets"][0]["porosity_open_percent"] == pytest.approx(
        100 * truth["pellets"][0]["open_px"] / truth["pellets"][0]["area_px"])

    lab = make_section(160, 160, [(80, 80, 75, 15)], pores_per_pellet=0).render()
    lab[20:60, 78:80] = PORE  # crosses 14 strips of 3 rows
    lab[25:55:2, 80] = PORE  # teeth touching it by an edge ...
    lab[30, 81] = PORE  # ... and one by a corner only
    strips = _report(lab, 3)
    assert strips["size_distributions"]["pore"]["count"] == 1
    assert strips["size_distributions"]["pore"]["area_px"] == 80 + 15 + 1
    assert json.dumps(strips, sort_keys=True) == json.dumps(_report(lab, 160), sort_keys=True)
    for shape in ((1, 1), (1, 9), (5, 1)):
        one = np.full(shape, MAGNETITE, dtype=np.uint8)
        r = _report(one, 1)
        assert r["pellets"][0]["area_px"] == one.size
        assert r["pellets"][0]["touches_image_border"] is True
        assert r["size_distributions"]["magnetite"]["count"] == 1
