"""``pelletseg evaluate``: measure a model package on a labelled dataset split through the
production tiled inference path and write metrics.json plus a PNG/HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import device_option, home_option, split_model, writable_folder
from models.package import TTA_KINDS


def resolve_package(model: str, home: Path | None) -> Path:
    """Local folder of ``model``: a package folder (holding model.json), or ``NAME`` /
    ``NAME:VERSION`` registered in the stack of ``home`` (fetched from its store and checked
    against the registered sha256; the newest version when none is given).

    Raises:
        click.ClickException: not a folder and not a registered model.
    """
    from models import MODEL_JSON, ModelPackageError
    from storage.errors import StorageError

    if (Path(model) / MODEL_JSON).is_file():
        return Path(model)
    if Path(model).exists() or "/" in model:
        raise click.ClickException(f"{model}: not a model package folder (no {MODEL_JSON})")
    from core.settings import get_settings
    from submission import prepare

    name, version = split_model(model)
    if name is None:  # ":3" would otherwise evaluate the default model
        raise click.ClickException(
            f"{model!r}: give a model package folder or a registered NAME[:VERSION]")
    settings = get_settings(home=home)
    try:
        registry = prepare(settings)
        rec = registry.resolve(name, version)
        return registry.fetch(rec.name, rec.version, rec.sha256)
    except (StorageError, ModelPackageError) as e:
        raise click.ClickException(str(e)) from e


@click.command("evaluate")
@click.argument("model")
@click.argument("dataset_yaml", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              callback=writable_folder, help="Folder for metrics.json, report.png and report.html.")
@click.option("--split", default=None,
              help="Dataset split to evaluate [default: test when dataset.yaml has splits:, "
                   "else every image].")
@click.option("--edge-limit", type=click.IntRange(min=0), default=3, show_default=True,
              help="N (px) of the edge-weighted confusion matrix: w = min(d, N) / N.")
@device_option
@click.option("--threads", "--torch-threads", "threads", type=click.IntRange(min=0), default=0,
              help="torch CPU threads [default: torch's choice].")
@click.option("--batch-size", type=click.IntRange(min=0), default=0,
              help="Tiles per forward pass [default: 1 on CPU, 8 on CUDA].")
@click.option("--tile-size", type=click.IntRange(min=32), default=None,
              help="Override the package's tile size (px) [default: the package's].")
@click.option("--halo", type=click.IntRange(min=0), default=None,
              help="Override the package's halo (px) [default: the package's].")
@click.option("--tta", type=click.Choice(TTA_KINDS), default=None,
              help="Override the package's test-time augmentation: flips averages the logits "
              "of each tile and its three flips (4 forward passes) [default: the package's].")
@click.option("--edge-pad", type=click.IntRange(min=0), default=None,
              help="Override the package's edge padding: px of mirrored image a tile may show past "
              "the image's edge, at most the halo [default: the package's; none: the halo].")
@home_option
def evaluate(model, dataset_yaml, out_dir, split, edge_limit, device, threads, batch_size,
             tile_size, halo, tta, edge_pad, home):
    """Evaluate MODEL (a package folder, or NAME[:VERSION] registered in --home) on a split
    of DATASET_YAML, labelling every image with the same tiled inference as production jobs.

    Writes OUT/metrics.json (mIoU, pixel accuracy, mean class accuracy, per-class IoU and
    accuracy, confusion matrix with rows = labelled, edge-weighted confusion matrix, phase
    fractions labelled vs predicted, calibration of the per-pixel confidence: expected
    calibration error and mIoU without the least-confident 5/10/20 % of the pixels),
    OUT/report.png and OUT/report.html.
    """
    from core.geometry import TileGeometry
    from imaging import ImageFormatError
    from models import ModelPackageError, read_package
    from training.errors import TrainingError
    from training.evaluation import evaluate_dataset
    from training.reports import write_report

    folder = resolve_package(model, home)
    try:
        package = read_package(folder, verify=False)
        geometry = None
        if tile_size is not None or halo is not None:
            geometry = TileGeometry(package.tile_size if tile_size is None else tile_size,
                                    package.halo if halo is None else halo)
        metrics = evaluate_dataset(folder, dataset_yaml, split=split, device=device,
                                   threads=threads, batch_size=batch_size,
                                   edge_limit=edge_limit, geometry=geometry, tta=tta,
                                   edge_pad=edge_pad)
        colours = [c.rgb for c in package.classes]
    except (TrainingError, ModelPackageError, ImageFormatError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    paths = write_report(metrics, out_dir, colours)
    m = metrics
    split = m["dataset"]["split"]
    if split == "all":
        click.echo(f"{dataset_yaml} declares no splits: evaluating all {m['images']} images")
    click.echo(f"{m['model']['name']} {m['model']['version']} on {m['dataset']['name']} "
               f"{split} ({m['images']} images, tile {m['inference']['tile_size']}, halo "
               f"{m['inference']['halo']}, edge padding {m['inference']['edge_pad']}, tta "
               f"{m['inference']['tta']}, input scale "
               f"{m['inference']['input_scale']:g}): mIoU {m['miou']}, pixel accuracy "
               f"{m['pixel_accuracy']}, mean class accuracy {m['mean_class_accuracy']}, "
               f"edge-weighted mIoU {m['edge_weighted']['miou']}")
    click.echo(f"{'class':<16}{'IoU':>8}{'acc':>8}{'labelled %':>12}{'predicted %':>13}"
               f"{'error pp':>10}")
    for c in m["per_class"]:
        cells = [c["iou"], c["accuracy"], c["labelled_percent"], c["predicted_percent"],
                 c["abs_error_pp"]]
        txt = ["–" if v is None else f"{v:.3f}" for v in cells]
        click.echo(f"{c['name']:<16}{txt[0]:>8}{txt[1]:>8}{txt[2]:>12}{txt[3]:>13}{txt[4]:>10}")
    cal = m.get("calibration")
    if cal:
        gains = ", ".join(f"without the least-confident {e['excluded_percent']:g} %: "
                          f"{e['miou']}" for e in cal["excluding_least_confident"])
        click.echo(f"calibration: ECE {cal['ece']} ({cal['n_bins']} bins), mean confidence "
                   f"{cal['mean_confidence']}; mIoU {cal['miou_all']}, {gains}")
    click.echo(f"wrote {paths['metrics']}, {paths['png']}, {paths['html']}")
