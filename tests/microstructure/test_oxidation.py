"""The oxidation front (microstructure.oxidation): the solver against a direct integration,
synthetic pellets with known hematite shells, and class tables without hematite or magnetite."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from microstructure import merge_partials, render_outputs, row_partial, summary_lines
from microstructure.classes import ClassInfo
from microstructure.oxidation import FIELDS, amount_above, front_depth, oxidation_classes
from microstructure.synthetic import (
    HEMATITE,
    MAGNETITE,
    SYNTHETIC_CLASSES,
    demo_section,
    make_section,
)


def _report(labels, classes=SYNTHETIC_CLASSES, rows=23, ps=None, band=20.0):
    H, W = labels.shape
    parts = [row_partial(labels[y:y + rows], y0=y, image_shape=(H, W), classes=classes)
             for y in range(0, H, rows)]
    return merge_partials(parts, classes=classes, pixel_size_um=ps, band_width_um=band)


def _integrated(depth, oxidised, oxides, half, step=0.001):
    """The front by brute force: spread each block's oxides over a fine depth grid and walk
    down until the hematite is used up."""
    grid = np.arange(0.0, depth.max() + half + step, step)
    density = np.zeros_like(grid)
    for d, n in zip(depth, oxides, strict=True):
        density[(grid >= d - half) & (grid < d + half)] += n / (2 * half)
    above = np.cumsum(density) * step
    return grid[np.searchsorted(above, oxidised.sum())]


def test_front_depth_by_hand():
    depth = np.array([8.0, 24.0])
    oxides = np.array([100, 100])
    # the first block's oxides fill 0..16 px: all of it hematite puts the front at 16 px
    assert front_depth(depth, np.array([100, 0]), oxides, 8) == pytest.approx(16.0)
    # 50 more hematite pixels take half of the second block: 16 + 8 px
    assert front_depth(depth, np.array([100, 50]), oxides, 8) == pytest.approx(24.0)
    assert front_depth(depth, np.array([0, 0]), oxides, 8) == 0.0  # no hematite
    assert front_depth(depth, oxides, oxides, 8) == pytest.approx(32.0)  # no magnetite
    assert front_depth(depth, np.array([0, 0]), np.array([0, 0]), 8) is None  # no oxides
    # a gap without oxides (8..24 px, e.g. a pore band) is stepped over
    assert front_depth(np.array([4.0, 32.0]), np.array([8, 4]), np.array([8, 8]),
                       4) == pytest.approx(32.0)


def test_front_depth_equals_a_direct_integration_on_random_blocks():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        depth = 8.0 + 16.0 * np.sqrt(rng.integers(1, 200, n)) - 8.0
        oxides = rng.integers(0, 257, n)
        oxidised = np.minimum(oxides, rng.integers(0, 257, n))
        if oxides.sum() == 0:
            continue
        got = front_depth(depth, oxidised, oxides, 8.0)
        assert got == pytest.approx(_integrated(depth, oxidised, oxides, 8.0), abs=0.01)
        # what lies above it: all the hematite's worth of oxides, by the same spreading
        assert amount_above(depth, oxides, 8.0, got) == pytest.approx(oxidised.sum(), abs=0.5)


def test_amount_above_by_hand():
    depth, amounts = np.array([8.0, 24.0]), np.array([100, 40])
    assert amount_above(depth, amounts, 8.0, 0.0) == 0.0
    assert amount_above(depth, amounts, 8.0, 4.0) == pytest.approx(25.0)  # a quarter of block 1
    assert amount_above(depth, amounts, 8.0, 20.0) == pytest.approx(110.0)
    assert amount_above(depth, amounts, 8.0, 99.0) == pytest.approx(140.0)


def test_shell_share_tells_a_shell_from_a_core_and_from_a_mix():
    """Hematite above the front: most of it for the drawn shells; little when hematite and
    magnetite swap (a hematite core); about the oxidised share when each iron oxide pixel is
    hematite at random (no front)."""
    labels = demo_section().render()
    swapped = labels.copy()
    swapped[labels == HEMATITE], swapped[labels == MAGNETITE] = MAGNETITE, HEMATITE
    mixed = labels.copy()
    oxide = (labels == HEMATITE) | (labels == MAGNETITE)
    mixed[oxide] = np.where(np.random.default_rng(0).random(int(oxide.sum())) < 0.4,
                            HEMATITE, MAGNETITE)
    shell, core, mix = (_report(x)["pellets"] for x in (labels, swapped, mixed))
    assert all(p["oxidation_front_shell_percent"] > 85 for p in shell)
    assert all(p["oxidation_front_shell_percent"] < 25 for p in core)
    for p in mix:
        assert p["oxidation_front_shell_percent"] == pytest.approx(p["oxidised_share_percent"],
                                                                   abs=3)


@pytest.mark.parametrize(("depth", "oxidised", "oxides", "message"), [
    ([8.0], [1, 2], [3, 3], "one length"),
    ([8.0, 24.0], [5, 0], [4, 4], "more hematite"),
])
def test_front_depth_refuses_inconsistent_blocks(depth, oxidised, oxides, message):
    with pytest.raises(ValueError, match=message):
        front_depth(np.array(depth), np.array(oxidised), np.array(oxides), 8.0)


def test_synthetic_pellets_fronts_within_half_a_block_of_their_shells():
    for section in (demo_section(),
                    make_section(1200, 1400, [(300, 300, 280, 60), (600, 1000, 350, 150),
                                              (1000, 300, 190, 12)], pores_per_pellet=60, seed=3)):
        labels = section.render()
        report = _report(labels, rows=100)
        truth = section.truth()["pellets"]
        assert len(report["pellets"]) == len(truth)
        for pellet, want in zip(report["pellets"], truth, strict=True):
            assert abs(pellet["oxidation_front_px"] - want["shell_px"]) <= 8, (pellet, want)
            # the oxidised share is exact: hematite / (hematite + magnetite) of the pellet
            px = pellet["pixels"]
            assert pellet["oxidised_share_percent"] == pytest.approx(
                100 * px["hematite"] / (px["hematite"] + px["magnetite"]))
        fronts = [p["oxidation_front_px"] for p in report["pellets"]]
        shells = [w["shell_px"] for w in truth]
        assert np.argsort(fronts).tolist() == np.argsort(shells).tolist()


def test_front_is_the_same_whatever_the_band_width_and_in_um_with_a_pixel_size():
    labels = demo_section().render()
    by_band = [_report(labels, band=band, ps=0.5) for band in (5.0, 20.0, 100.0)]
    first = [p["oxidation_front_px"] for p in by_band[0]["pellets"]]
    for report in by_band[1:]:
        assert [p["oxidation_front_px"] for p in report["pellets"]] == first
    assert [p["oxidation_front_um"] for p in by_band[0]["pellets"]] == [f * 0.5 for f in first]
    assert by_band[0]["oxidation"]["oxidised"] == "hematite"


def test_classes_without_hematite_and_magnetite_have_no_front():
    renamed = [ClassInfo("pyrite" if c.name == "hematite" else c.name, c.value, c.role, c.colour)
               for c in SYNTHETIC_CLASSES]
    assert oxidation_classes(renamed) is None
    report = _report(demo_section().render(), classes=renamed)
    assert report["oxidation"] is None and report["pellets"]
    assert all(p[k] is None for p in report["pellets"] for k in FIELDS)
    header = next(csv.reader(io.StringIO(render_outputs(report)["pellets.csv"].decode())))
    assert not set(FIELDS) & set(header)
    assert not any("oxidation" in line for line in summary_lines(report))


def test_british_spelling_and_outputs():
    classes = [ClassInfo("Haematite" if c.name == "hematite" else c.name, c.value, c.role,
                         c.colour) for c in SYNTHETIC_CLASSES]
    assert oxidation_classes(classes) == (2, 3)
    # a hematite class that is not a phase (here: a mount) is not the oxidised phase
    mount = [ClassInfo(c.name, c.value, "mount" if c.name == "hematite" else c.role, c.colour)
             for c in SYNTHETIC_CLASSES]
    assert oxidation_classes(mount) is None
    report = _report(demo_section().render(), classes=classes, ps=0.5)
    rows = list(csv.DictReader(io.StringIO(render_outputs(report)["pellets.csv"].decode())))
    assert [float(r["oxidation_front_um"]) for r in rows] == pytest.approx(
        [p["oxidation_front_um"] for p in report["pellets"]])
    lines = [line for line in summary_lines(report) if "oxidation front" in line]
    assert len(lines) == len(report["pellets"])
    first = report["pellets"][0]
    assert (f"oxidation front {first['oxidation_front_um']:.1f} µm "
            f"({first['oxidation_front_shell_percent']:.0f} % of the Haematite above it") in lines[0]
    assert "Haematite" in lines[0]


def test_a_pellet_below_the_block_grid_has_a_share_but_no_front():
    """A 7 px pellet fills no 16 px block: its share is exact, its front unknown (None), and
    the outputs say so instead of failing."""
    section = make_section(200, 300, [(100, 80, 60, 20), (100, 220, 7, 2)], pores_per_pellet=0)
    report = _report(section.render(), rows=50)
    big, small = report["pellets"]
    assert big["oxidation_front_px"] is not None and small["area_px"] < 16 * 16
    assert small["oxidised_share_percent"] is not None
    assert small["oxidation_front_px"] is small["oxidation_front_shell_percent"] is None
    lines = summary_lines(report)
    assert "oxidation front" in lines[2] and "oxidation front" not in lines[3]
    assert "hematite" in lines[3] and "% of hematite + magnetite" in lines[3]
    rows = list(csv.DictReader(io.StringIO(render_outputs(report)["pellets.csv"].decode())))
    assert rows[1]["oxidation_front_px"] == "" and rows[1]["oxidised_share_percent"] != ""
