"""Command output piped to a file: no wrapping at 80 columns, brackets in values kept."""

from __future__ import annotations

import io

from cli.console import PIPE_WIDTH, make_console
from cli.run import fractions_table, print_fractions

DOC = {"width": 123456, "height": 654321, "model": {"name": "ebc-unet-mnv2", "version": "1"},
       "classes": [{"name": "hematite", "pixels": 10, "percent": 12.5, "percent_of_pellet": 20.0},
                   {"name": "pore", "pixels": 5, "percent": 6.25, "percent_of_pellet": None}]}


def caption(doc: dict) -> str:
    """The fraction table of ``doc`` as a 160-column console prints it, whitespace runs as
    one space (its caption lines included)."""
    out = io.StringIO()
    console = make_console(out)
    console.width = 160
    console.print(fractions_table(doc))
    return " ".join(out.getvalue().split())


def test_long_lines_and_urls_are_not_wrapped_when_piped(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    console = make_console(out)
    assert not console.is_terminal and console.width == PIPE_WIDTH
    url = "file:///home/someone/.pelletseg/store/jobs/" + "0123456789abcdef" * 8 + "/labels.tif"
    console.print(f"  labels.tif      {url}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith(url)


def test_table_title_is_not_wrapped(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    for width in (None, 120):
        out = io.StringIO()
        console = make_console(out)
        if width:
            console.width = width
        console.print(fractions_table(DOC))
        text = out.getvalue()
        title = "Phase fractions  (123456 x 654321 px, model ebc-unet-mnv2 1)"
        assert title in text, text
        assert "hematite" in text and "12.50" in text


def test_bracketed_values_are_printed_as_they_are():
    out = io.StringIO()
    make_console(out).print("error: /data/scan[red]/mosaic[1].tif cannot be read")
    assert out.getvalue().strip() == "error: /data/scan[red]/mosaic[1].tif cannot be read"


def test_fractions_table_says_how_the_rows_were_computed(monkeypatch):
    """The table's caption carries core.inference_lines of the document's ``inference``
    (its words are tested in tests/core/test_inference.py)."""
    bf16 = {"runtime": "openvino", "device": "cpu", "precision": "bf16", "f32_convs": 9,
            "tta": "none", "rows": [0, 1, 2, 5]}
    f32 = {**bf16, "precision": "f32", "f32_convs": 0, "tta": "flips", "rows": [3, 4]}
    monkeypatch.delenv("COLUMNS", raising=False)
    assert "computed with" not in caption(DOC)  # jobs from before it was recorded
    assert ("computed with openvino on cpu, bfloat16 (first 9 convolutions float32)"
            in caption({**DOC, "inference": [bf16]}))
    two = caption({**DOC, "inference": [bf16, f32]})
    assert "computed with rows 0-2, 5: openvino on cpu, bfloat16" in two
    assert "computed with rows 3-4: openvino on cpu, float32, test-time flips" in two


def test_fractions_table_says_what_no_image_covers_and_the_camera_bits(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    plain = caption(DOC)
    assert "no image covers" not in plain and "significant bits" not in plain
    doc = {**DOC, "pixels_total": 2000, "mount_class_declared": True, "nodata_pixels": 500,
           "significant_bits": 12}
    text = caption(doc)
    assert "500 px no image covers (25.00 %): labelled pore" in text, text
    assert "16-bit source read as 12 significant bits" in text
    assert "the model has no mount class to label them" in caption(
        {**doc, "mount_class_declared": False})


def test_the_fraction_table_is_followed_by_the_jobs_warnings(monkeypatch):
    import cli.run

    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    monkeypatch.setattr(cli.run, "console", make_console(out))
    print_fractions(DOC)
    assert "warning" not in out.getvalue() and "hematite" in out.getvalue()
    message = "pixel size 1.000 µm/px is 2.0 x coarser than model m 1 was trained at [0.5]"
    print_fractions({**DOC, "warnings": [{"code": "pixel_size_unlike_model", "message": message}]})
    lines = out.getvalue().splitlines()
    assert lines[-1] == f"warning: {message}"  # after the table, brackets kept


def test_models_lists_each_package_with_its_cpu_serving_precision(tmp_path):
    """``pelletseg models`` publishes the bundled packages and lists them with the precision a
    CPU worker serves each at (the bundled model was validated for bfloat16 with its first 9
    convolutions in float32) and what it was trained on."""
    from click.testing import CliRunner

    from cli.main import main
    from cli.modelinfo import cpu_serving
    from models import MODEL_ZOO, read_package

    res = CliRunner().invoke(main, ["models", "--home", str(tmp_path / "home")])
    assert res.exit_code == 0, res.output
    lines = [line.split("\t") for line in res.output.strip().splitlines()]
    bundled = read_package(MODEL_ZOO / "ebc-unet-mnv2" / "1")
    row = next(line for line in lines if line[0] == "ebc-unet-mnv2")
    assert row[1] == "1" and row[3] == f"sha256 {bundled.weights_sha256[:12]}"
    assert row[5] == cpu_serving(bundled) == (
        "CPU: bfloat16, first 9 convolutions float32 (where the CPU has bfloat16 units)")
    assert row[6].startswith("trained on SEM cross-sections") and "µm/px" not in row[6]
    assert cpu_serving(bundled.model_copy(update={"cpu_precision": "f32"})) == "CPU: float32"
    # a package that records its training pixel size lists it
    import json
    import shutil

    from core.settings import get_settings
    from submission import prepare

    folder = tmp_path / "pkg" / "ebc-unet-mnv2" / "2"
    shutil.copytree(MODEL_ZOO / "ebc-unet-mnv2" / "1", folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "version": "2", "um_per_px": 0.5}))
    prepare(get_settings(home=tmp_path / "home")).publish(folder)
    res = CliRunner().invoke(main, ["models", "--home", str(tmp_path / "home")])
    row = next(line.split("\t") for line in res.output.strip().splitlines()
               if line.startswith("ebc-unet-mnv2\t2\t"))
    assert row[6].endswith(", at 0.5 µm/px"), row
