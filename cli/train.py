"""``pelletseg train``: train a segmentation model on a dataset.yaml and write a model package."""

from __future__ import annotations

import json
import re

import click

from cli.options import device_option, home_option, writable_folder
from core.geometry import DEFAULT_GEOMETRY


def _input_scale(ctx, param, value):
    """``--input-scale``: ``auto`` or a float in (0, 1]."""
    if value is None or value == "auto":
        return value
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not 0 < scale <= 1:
        raise click.BadParameter(f"{value!r}: expected a number in (0, 1] or 'auto'")
    return scale


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


def _class_weights(ctx, param, value):
    if value is None or value in ("inv_sqrt", "auto"):
        return value
    if value.lower() == "none":
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError as e:
        raise click.BadParameter(f"{value!r}: expected 'inv_sqrt', 'auto', 'none' or "
                                 "comma-separated floats") from e


@click.command("train")
@click.argument("dataset_yaml", type=click.Path(exists=True, dir_okay=False))
@click.option("--arch", default="Unet", show_default=True, help="smp architecture.")
@click.option("--encoder", default="resnet34", show_default=True,
              help="smp encoder (random init), or auto: resnet34 at a reduced input scale or "
              "on CUDA, resnet18 at full resolution on CPU [default recipe: auto].")
@click.option("--arch-params", callback=_json_object, default=None,
              help="Extra smp arguments as a JSON object, e.g. "
                   "'{\"decoder_channels\": [128, 64, 32, 16, 8]}'.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of a hand-set run (cosine schedule over them) [default: the default "
                   "recipe, fitted to --max-minutes].")
@click.option("--from", "from_model", default=None,
              help="Fine-tune this model package (folder, or NAME[:VERSION] registered in the "
                   "stack of --home): its architecture, normalisation and weights; its class "
                   "table must equal the dataset's. The default recipe then uses 0.3 x its "
                   "learning rate.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              callback=writable_folder, help="Package folder to write (model.json + weights.safetensors).")
@click.option("--name", default=None,
              help="Package name [default: DATASET-ARCH-ENCODER, lower case].")
@click.option("--version", "version", default=None,
              help="Package version [default: the checkpoint's with --resume, else one more "
                   "than the highest integer version registered under --name, else 1].")
@click.option("--patch-size", type=int, default=256, show_default=True, help="Training patch, px.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option("--dice-weight", type=float, default=0.0, show_default=True,
              help="Weight of the soft dice term added to cross-entropy.")
@click.option("--class-weights", callback=_class_weights, default=None,
              help="Cross-entropy class weights: 'inv_sqrt' (1/sqrt of the training pixel "
                   "shares), 'auto' (inv_sqrt where a class holds under 0.5 % of the labelled "
                   "training pixels, else none), 'none' (every class 1) or comma-separated "
                   "floats, one per class [default: the recipe's (auto) with --max-minutes, "
                   "else none].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
              help="Batches per epoch [default: about one pass over the training pixels].")
@device_option
@click.option("--tile-size", type=int, default=DEFAULT_GEOMETRY.tile_size,
              help="Tile size recorded in the package (validation, evaluation and serving "
              "use it), image px [default: 1024; a model at a reduced input scale sees 512 "
              "model px, e.g. 2048 image px at 0.25].")
@click.option("--halo", type=int, default=DEFAULT_GEOMETRY.halo,
              help="Tile halo recorded in the package, image px [default: 128; 64 model px "
              "at a reduced input scale].")
@click.option("--full-weights", is_flag=True, help="Store float32 weights (default float16).")
@click.option("--threads", "--torch-threads", "threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads [default: torch's choice].")
# the kinds of training.sampling.AUGMENTS (and below of training.trainer.TARGETS and
# training.precision.CPU_BF16_MODES), written out: `pelletseg serve` loads this module and
# must not import training (tests/cli/test_train.py checks the lists agree)
@click.option("--augment", type=click.Choice(["none", "geometric", "default", "luminance",
                                             "photometric"]),
              default="default", show_default=True,
              help="Patch augmentation (torchvision.transforms.v2): flips and 90-degree "
              "rotations; default adds mild brightness/contrast jitter and blur; luminance "
              "strong brightness/contrast jitter (colour ratios kept) and blur; photometric "
              "strong brightness/contrast jitter and white-balance gains, and blur.")
@click.option("--members", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Train a deep ensemble of this many networks at once (same batches, "
              "different initialisations; their softmax probabilities averaged when serving, "
              "which costs one forward pass per member); with --from, that package's "
              "[default recipe: its choice].")
@click.option("--scale-jitter", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Random zoom of each training patch by a factor in [1/(1+J), 1+J] "
              "(scale augmentation: grains drawn larger or smaller than in the data); 0: none "
              "[default recipe: its choice].")
@click.option("--border", type=click.Choice(["none", "halo"]), default="none",
              show_default=True,
              help="What surrounds a training image: none, its pixels only; halo, the reflect "
              "padding tiled inference gives an image's edges (the halo, at the input scale), "
              "unlabelled, so edge patches see what edge tiles see [default recipe: its "
              "choice].")
@click.option("--tta", type=click.Choice(["auto", "none", "flips"]), default="none",
              show_default=True,
              help="The package's test-time augmentation: none; flips, the mean of each tile's "
              "logits over its four flips (4 forward passes); auto, flips where a served tile "
              "with them takes at most 2 x the time without (measured) [default recipe: its "
              "choice].")
@click.option("--p-targeted", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of patches centred on a class drawn uniformly (rare-class balance).")
@click.option("--average-tau", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Keep an exponential moving average of the weights with this time constant "
              "(fraction of the run) and package it instead of the last weights; 0: none "
              "[default recipe: its choice].")
@click.option("--input-scale", callback=_input_scale, default=None, metavar="SCALE|auto",
              help="Model pixels per image pixel, in (0, 1]: train on images reduced by this "
              "factor (area averaging) and serve each tile reduced the same way (0.5: a 256 px "
              "patch covers 512 image px, 4x less compute per image px); auto: the strongest of "
              "0.125, 0.25 and 0.5 at which every class keeps a round-trip IoU >= 0.92, else 1 "
              "[default: the recipe's "
              "(auto); with --from, that package's; else 1].")
@click.option("--targets", type=click.Choice(["labels", "fractions"]), default="labels",
              help="What the loss compares a reduced-scale model with: labels, the class of "
              "the nearest image pixel of each model pixel; fractions, the share of each class "
              "in the image pixels it covers (grain edges and thin lamellae as the mixtures "
              "the reduced image shows). No effect at scale 1 [default: labels; the default "
              "recipe: its choice].")
@click.option("--cpu-bf16", type=click.Choice(["auto", "on", "off"]), default="off",
              help="bfloat16 autocast for training on CPU: auto times a few steps both ways "
              "and takes bfloat16 where it is >= 1.2x faster (CPUs with AMX or AVX-512 BF16); "
              "float16 autocast on CUDA is --amp [default: off; the default recipe: auto].")
@click.option("--val-crop", type=click.IntRange(min=32), default=None,
              help="Per-epoch validation on the centre N x N px of each val image "
                   "[default: whole images].")
@click.option("--amp/--no-amp", default=True, show_default=True,
              help="float16 mixed precision on CUDA (ignored on CPU).")
@click.option("--resume", is_flag=True,
              help="Continue from the checkpoint in --checkpoint-dir (same settings).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint folder [default: OUT/checkpoint].")
@click.option("--max-minutes", type=click.FloatRange(min=0), default=None,
              help="Default recipe (no --epochs): the wall-clock budget of the whole call "
                   "(min), the learning-rate schedule is fitted to it. With --epochs: stop "
                   "after the first epoch that ends past this wall time (min).")
@click.option("--final-eval/--no-final-eval", default=True, show_default=True,
              help="Measure the package's val/test metrics through tiled inference.")
@click.option("--register/--no-register", default=True, show_default=True,
              help="Publish the package into the stack (store + model table) of --home.")
@home_option
@click.pass_context
def train(ctx, dataset_yaml, arch, encoder, arch_params, epochs, from_model, out_dir, name,
          version, patch_size, batch_size, lr, dice_weight, class_weights, seed,
          steps_per_epoch, device, tile_size, halo, full_weights, threads, augment, members,
          scale_jitter, border, tta, p_targeted,
          average_tau, input_scale, targets, cpu_bf16, val_crop, amp, resume, checkpoint_dir,
          max_minutes, final_eval, register, home):
    """Train on DATASET_YAML and write a model package to --out.

    Without --epochs, the default recipe (training/recipe.py) picks the model, patches,
    sampling, loss, augmentation and a learning-rate schedule fitted to --max-minutes, and
    prints what it chose; options given on the command line override its choices.

    Random init (no downloads). A checkpoint is written after every epoch (safetensors +
    JSON, never pickle); --resume continues it. The model with the best val-split mIoU is
    kept; val and test metrics (tiled inference) go into model.json. With --register (the
    default) the package is stored under models/NAME/VERSION/ of the store of --home and
    recorded in its model table.
    """
    import time
    from pathlib import Path

    from click.core import ParameterSource

    called = time.monotonic()

    from core.geometry import GeometryError, TileGeometry
    from imaging import ImageFormatError
    from models import ModelPackageError
    from storage.errors import StorageError
    from training.checkpoints import read_state
    from training.datasets import load_dataset_spec
    from training.errors import TrainingError
    from training.trainer import train as run_training

    geometry = None  # the default for the package's input scale (training.recipe)
    if {ctx.get_parameter_source(k) for k in ("tile_size", "halo")} != {ParameterSource.DEFAULT}:
        try:
            geometry = TileGeometry(tile_size, halo)
        except GeometryError as e:
            raise click.BadParameter(str(e), param_hint="--tile-size/--halo") from e

    recipe = None
    scale_choice = weights_choice = None
    if from_model is not None:
        from cli.evaluate import resolve_package

        from_model = resolve_package(from_model, home)
    if epochs is None:
        from training.datasets import load_masks
        from training.recipe import default_recipe, describe_recipe, resolve_recipe

        if not max_minutes:
            raise click.UsageError("give --max-minutes (the default recipe fits its schedule "
                                   "to it) or --epochs (a hand-set run)")
        try:
            spec0 = load_dataset_spec(dataset_yaml)
        except TrainingError as e:
            raise click.ClickException(str(e)) from e
        recipe = default_recipe(max_minutes, device, fine_tune=from_model is not None)
        given = {k for k in ("arch", "encoder", "arch_params", "patch_size", "batch_size", "lr",
                             "dice_weight", "class_weights", "augment", "p_targeted",
                             "steps_per_epoch", "average_tau", "input_scale", "targets", "cpu_bf16",
                             "scale_jitter", "members", "border", "tta")
                 if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        local = {"arch": arch, "encoder": encoder, "arch_params": arch_params,
                 "patch_size": patch_size, "batch_size": batch_size, "lr": lr,
                 "dice_weight": dice_weight, "class_weights": class_weights,
                 "augment": augment, "p_targeted": p_targeted,
                 "steps_per_epoch": steps_per_epoch, "average_tau": average_tau,
                 "input_scale": input_scale, "targets": targets, "cpu_bf16": cpu_bf16,
                 "scale_jitter": scale_jitter, "members": members, "border": border,
                 "tta": tta}
        recipe.update({k: local[k] for k in given})
        if from_model is not None:
            from models import read_package

            base = read_package(from_model, verify=False)
            recipe.update(arch=base.architecture, encoder=base.encoder,
                          arch_params=dict(base.arch_params), init_from=str(from_model),
                          members=base.members)
            if "input_scale" not in given:
                recipe["input_scale"] = base.input_scale
        try:
            train_stems = spec0.split_stems().get("train") or []
            masks = load_masks(spec0, train_stems) if train_stems and "auto" in (
                recipe["input_scale"], recipe["class_weights"]) else None
        except TrainingError as e:
            raise click.ClickException(str(e)) from e
        if train_stems:  # (an empty train split is the trainer's error to report)
            recipe = resolve_recipe(recipe, device, masks, len(spec0.classes),
                                    geometry.tile_size if geometry else None)
            scale_choice = recipe.pop("input_scale_choice", None)
            weights_choice = recipe.pop("class_weights_choice", None)
        click.echo(f"default recipe for {max_minutes:g} min on {device}"
                   + (f" (fine-tuning {from_model})" if from_model else "") + ":\n"
                   + describe_recipe({**recipe, "input_scale_choice": scale_choice,
                                      "class_weights_choice": weights_choice})
                   + (f"\noverridden on the command line: {sorted(given)}" if given else ""))
        arch, encoder, arch_params = recipe["arch"], recipe["encoder"], recipe["arch_params"]
        patch_size, batch_size, lr = recipe["patch_size"], recipe["batch_size"], recipe["lr"]
        dice_weight, class_weights = recipe["dice_weight"], recipe["class_weights"]
        augment, p_targeted = recipe["augment"], recipe["p_targeted"]
        steps_per_epoch, average_tau = recipe["steps_per_epoch"], recipe["average_tau"]
        input_scale, targets = recipe["input_scale"], recipe["targets"]
        cpu_bf16, scale_jitter = recipe["cpu_bf16"], recipe["scale_jitter"]
        members, border, tta = recipe["members"], recipe["border"], recipe["tta"]
    elif from_model is not None:
        from models import read_package

        base = read_package(from_model, verify=False)
        arch, encoder, arch_params = base.architecture, base.encoder, dict(base.arch_params)

    try:
        if name is None and from_model is not None:
            name = base.name
        if name is None:
            raw = f"{load_dataset_spec(dataset_yaml).name}-{arch}-{encoder}".lower()
            name = re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")[:100]
        if version is None:
            state = read_state(checkpoint_dir or Path(out_dir) / "checkpoint") if resume else None
            version = state["config"]["version"] if state else _next_version(name, register, home)
        elif register and not resume and str(version) in _registered_versions(name, home):
            raise click.ClickException(f"model {name} {version} is already registered in the "
                                       "stack of --home: choose another --version (or omit it)")
    except (TrainingError, StorageError) as e:
        raise click.ClickException(str(e)) from e

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        pkg = run_training(
            dataset_yaml, arch=arch, encoder=encoder, arch_params=arch_params,
            epochs=epochs or 1, init_from=from_model, recipe=recipe,
            average_tau=average_tau or None, input_scale=input_scale,
            input_scale_choice=scale_choice, class_weights_choice=weights_choice,
            targets=targets, cpu_bf16=cpu_bf16,
            scale_jitter=scale_jitter, members=members, border=border, tta=tta,
            call_budget_s=recipe["call_budget_s"] if recipe else None, call_started=called,
            validate_each_epoch=recipe["validate_each_epoch"] if recipe else True,
            out_dir=out_dir, name=name, version=version, patch_size=patch_size,
            batch_size=batch_size, lr=lr, dice_weight=dice_weight, class_weights=class_weights,
            seed=seed, steps_per_epoch=steps_per_epoch, device=device, geometry=geometry,
            half_weights=not full_weights, augment=augment, p_targeted=p_targeted,
            val_crop=val_crop, amp=amp, resume=resume, checkpoint_dir=checkpoint_dir,
            max_minutes=None if recipe else max_minutes, final_eval=final_eval)
    except (TrainingError, ModelPackageError, ImageFormatError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    if register:
        from core.settings import get_settings
        from submission import prepare

        settings = get_settings(home=home)
        try:
            prepare(settings).publish(out_dir)
        except (StorageError, ModelPackageError) as e:
            raise click.ClickException(f"{out_dir} was written but not registered: {e}") from e
        click.echo(f"registered {pkg.name} {pkg.version} in {settings.resolved_database_url}, "
                   f"stored under models/{pkg.name}/{pkg.version}/ of "
                   f"{settings.resolved_storage_url}")
    m, t = pkg.metrics, pkg.training
    early = f", stopped early after epoch {t['stopped_early']['after_epoch']}" \
        if t.get("stopped_early") else ""
    click.echo(f"wrote {out_dir}: {pkg.name} {pkg.version} (sha256 {pkg.weights_sha256[:12]}), "
               f"best epoch {m.get('best_epoch')}{early}, val mIoU {m.get('val_miou')}, "
               f"test mIoU {m.get('test_miou')}, {t['time_s']} s")
    if pkg.um_per_px is None:
        click.echo("note: the dataset gives no um_per_px (its images' pixel size, µm/px): the "
                   "package records none, so jobs at another magnification get no "
                   "pixel_size_unlike_model warning (README glossary, 'job warning'); add it to "
                   "dataset.yaml and train again to have them")


def _registered_versions(name: str, home) -> list[str]:
    """Versions of ``name`` in the model table of the stack of ``home`` (migrated first)."""
    from core.settings import get_settings
    from storage.jobtable import job_table, upgrade

    settings = get_settings(home=home)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    return [m.version for m in job_table(settings).models.list() if m.name == name]


def _next_version(name: str, register: bool, home) -> str:
    """One more than the highest integer version of ``name`` in the model table, else "1"."""
    if not register:
        return "1"
    versions = [int(v) for v in _registered_versions(name, home) if v.isdigit()]
    return str(max(versions, default=0) + 1)
