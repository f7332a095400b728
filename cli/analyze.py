"""``pelletseg analyze``: the microstructure outputs of a label map made anywhere (a pelletseg
job, ilastik, another model), through the same code as a job's rows and reducer."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import writable_folder


@click.command("analyze")
@click.argument("labels_tiff", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--classes", "classes_yaml", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML with a 'classes:' list (dataset.yaml form): name, value and "
                   "role: mount | pore | phase (default phase) per class.")
@click.option("--pixel-size-um", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pixel size (µm/px). Without it every figure is in px.")
@click.option("--band-width-um", type=click.FloatRange(min=0, min_open=True), default=50.0,
              show_default=True, help="Radial-profile band width (µm; px without --pixel-size-um).")
@click.option("--rows", "rows_height", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Rows read per strip (px): bounds memory; the figures do not depend on it.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              callback=writable_folder, help="Folder for microstructure.json, the CSV tables and radial_profiles.png.")
def analyze(labels_tiff: Path, classes_yaml: Path, pixel_size_um: float | None,
            band_width_um: float, rows_height: int, out_dir: Path) -> None:
    """Microstructure of LABELS_TIFF, a single-band 8-bit label map (TIFF, pyramidal TIFF,
    PNG): pellets (area, equivalent diameter, open and closed porosity, phase fractions),
    size distributions of 8-connected objects, shared boundary lengths and radial profiles
    (docs/microstructure.md). Pixel values are the classes' values in CLASSES_YAML."""
    try:
        from microstructure import analyze_label_map, load_class_table, summary_lines

        classes = load_class_table(classes_yaml)
        report = analyze_label_map(labels_tiff, classes, pixel_size_um=pixel_size_um,
                                   out_dir=out_dir, rows_height=rows_height,
                                   band_width_um=band_width_um)
    except ImportError as e:
        raise click.ClickException(f"{e.name or e} is not installed: pip install 'pelletseg[worker]' "
                                   "(scipy computes the microstructure)") from None
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    for line in summary_lines(report):
        click.echo(line)
    click.echo(f"outputs written to {out_dir}")
