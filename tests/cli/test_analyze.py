"""``pelletseg analyze``: a tiny synthetic label map TIFF, the outputs it writes, and clear
errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pyvips
from click.testing import CliRunner

from cli.main import main
from microstructure.synthetic import make_section

CLASSES_YAML = """classes:
  - {name: epoxy, value: 0, role: mount, colour: [40, 40, 40]}
  - {name: pore, value: 1, role: pore}
  - {name: hematite, value: 2}
  - {name: magnetite, value: 3, role: phase}
"""


@pytest.fixture(scope="module")
def section():
    return make_section(120, 150, [(60, 60, 50, 12)], pores_per_pellet=8, seed=2)


@pytest.fixture
def inputs(tmp_path, section):
    labels = tmp_path / "labels.tif"
    pyvips.Image.new_from_array(section.render()).tiffsave(str(labels), tile=True, pyramid=True,
                                                           tile_width=64, tile_height=64)
    classes = tmp_path / "classes.yaml"
    classes.write_text(CLASSES_YAML)
    return labels, classes


def test_analyze_writes_the_outputs(tmp_path, inputs, section):
    labels, classes = inputs
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["analyze", str(labels), "--classes", str(classes),
                                    "--pixel-size-um", "1.5", "--rows", "17", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "pellets: 1" in res.output and "pixel size: 1.5 µm/px" in res.output
    names = {p.name for p in out.iterdir()}
    assert {"microstructure.json", "pellets.csv", "size_distributions.csv", "boundaries.csv",
            "radial_profiles.csv", "radial_profiles.png"} <= names
    doc = json.loads((out / "microstructure.json").read_text())
    truth = section.truth()
    assert doc["pixel_size_um"] == 1.5 and doc["units"] == "µm"
    assert doc["pellets"][0]["area_mm2"] == pytest.approx(truth["pellets"][0]["area_px"] * 2.25e-6)
    assert doc["size_distributions"]["pore"]["count"] == len(truth["pore_areas_px"])
    assert doc["radial_profiles"]["band_width_um"] == 50.0


def test_analyze_reads_16_bit_maps(tmp_path, inputs, section):
    _, classes = inputs
    labels = tmp_path / "labels16.tif"
    pyvips.Image.new_from_array(section.render().astype(np.uint16)).tiffsave(str(labels))
    res = CliRunner().invoke(main, ["analyze", str(labels), "--classes", str(classes),
                                    "--out", str(tmp_path / "o16")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o16" / "microstructure.json").read_text())
    assert doc["pellets"][0]["area_px"] == section.truth()["pellets"][0]["area_px"]
    assert doc["units"] == "px" and doc["pellets"][0]["area_mm2"] is None


def test_analyze_errors(tmp_path, inputs):
    labels, classes = inputs
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  - {name: epoxy, value: 0, role: resin}\n")
    res = runner.invoke(main, ["analyze", str(labels), "--classes", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "role 'resin'" in res.output
    few = tmp_path / "few.yaml"
    few.write_text("classes:\n  - {name: epoxy, value: 0, role: mount}\n")
    res = runner.invoke(main, ["analyze", str(labels), "--classes", str(few), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "belong to no class" in res.output and "labels.tif" in res.output
    rgb = tmp_path / "rgb.png"
    pyvips.Image.new_from_array(np.zeros((8, 8, 3), dtype=np.uint8)).pngsave(str(rgb))
    res = runner.invoke(main, ["analyze", str(rgb), "--classes", str(classes), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "3 band(s)" in res.output
    wide = tmp_path / "wide.tif"
    pyvips.Image.new_from_array(np.full((4, 4), 300, dtype=np.uint16)).tiffsave(str(wide))
    res = runner.invoke(main, ["analyze", str(wide), "--classes", str(classes), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "label value 300" in res.output
    broken = tmp_path / "broken.tif"
    broken.write_bytes(labels.read_bytes()[:2000])
    res = runner.invoke(main, ["analyze", str(broken), "--classes", str(classes), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "broken.tif" in res.output
    assert not (tmp_path / "o" / "microstructure.json").exists()
