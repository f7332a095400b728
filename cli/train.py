"""``pelletseg train``: train a segmentation model on a dataset.yaml and write a model package."""

from __future__ import annotations

import json

import click

from cli.options import home_option


def _json_object(ctx, param, value):
    if value is None:
        return None
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"decoder_channels\": [64, 32]}'")
    return obj


@click.command("train")
@click.argument("dataset_yaml", type=click.Path(exists=True, dir_okay=False))
@click.option("--arch", default="Unet", show_default=True, help="smp architecture.")
@click.option("--encoder", default="resnet34", show_default=True, help="smp encoder (random init).")
@click.option("--arch-params", callback=_json_object, default=None,
              help="Extra smp arguments as a JSON object, e.g. "
                   "'{\"decoder_channels\": [128, 64, 32, 16, 8]}'.")
@click.option("--epochs", type=click.IntRange(min=1), required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Package folder to write (model.json + weights.safetensors).")
@click.option("--name", required=True, help="Package name, e.g. ebc-unet-mnv2.")
@click.option("--version", "version", required=True, help="Package version, e.g. 1.")
@click.option("--patch-size", type=int, default=256, show_default=True, help="Training patch, px.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option("--dice-weight", type=float, default=0.0, show_default=True,
              help="Weight of the soft dice term added to cross-entropy.")
@click.option("--class-weights", default=None,
              help="Cross-entropy class weights: 'inv_sqrt' (1/sqrt of the training pixel "
                   "shares) or comma-separated floats, one per class [default: none].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
              help="Batches per epoch [default: about one pass over the training pixels].")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")
@click.option("--tile-size", type=int, default=1024, show_default=True,
              help="Inference tile size recorded in the package, px.")
@click.option("--halo", type=int, default=128, show_default=True,
              help="Inference tile halo recorded in the package, px.")
@click.option("--full-weights", is_flag=True, help="Store float32 weights (default float16).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads [default: torch's choice].")
@click.option("--register/--no-register", default=True, show_default=True,
              help="Publish the package into the stack (store + model table) of --home.")
@home_option
def train(dataset_yaml, arch, encoder, arch_params, epochs, out_dir, name, version, patch_size,
          batch_size, lr, dice_weight, class_weights, seed, steps_per_epoch, device, tile_size,
          halo, full_weights, threads, register, home):
    """Train ARCH/ENCODER on DATASET_YAML and write a model package to --out.

    The model with the best val-split mIoU is kept; val and test metrics go into model.json.
    """
    from worker.errors import WorkerError
    from worker.training import train as run_training

    if class_weights and class_weights != "inv_sqrt":
        try:
            class_weights = [float(v) for v in class_weights.split(",")]
        except ValueError as e:
            raise click.BadParameter(f"{class_weights!r}: expected 'inv_sqrt' or floats",
                                     param_hint="--class-weights") from e
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        pkg = run_training(
            dataset_yaml, arch=arch, encoder=encoder, arch_params=arch_params, epochs=epochs,
            out_dir=out_dir, name=name, version=version, patch_size=patch_size,
            batch_size=batch_size, lr=lr, dice_weight=dice_weight, class_weights=class_weights,
            seed=seed, steps_per_epoch=steps_per_epoch, device=device, tile_size=tile_size,
            halo=halo,
            half_weights=not full_weights)
    except (WorkerError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    if register:
        from cli.stack import prepare
        from storage.settings import get_settings
        from worker.context import WorkerContext
        from worker.registry import publish_package

        settings = get_settings(home=home)
        prepare(settings)
        publish_package(WorkerContext.from_settings(settings, enqueue=lambda *a: None), out_dir)
        click.echo(f"registered {pkg.name} {pkg.version} in {settings.resolved_database_url}")
    m = pkg.metrics
    click.echo(f"wrote {out_dir}: {pkg.name} {pkg.version}, best epoch {m.get('best_epoch')}, "
               f"val mIoU {m.get('val_miou')}, test mIoU {m.get('test_miou')}, "
               f"{pkg.training['time_s']} s")
