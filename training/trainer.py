"""Train a segmentation-models-pytorch network on a labelled dataset and write a model package.

Plain functions, no Celery. A dataset is described by a ``dataset.yaml`` (see
:class:`training.datasets.DatasetSpec`); :func:`train` samples class-balanced random patches
(:mod:`training.sampling`), augments them with ``torchvision.transforms.v2``, trains with
cross-entropy (+ optional soft dice, :mod:`training.losses`) and AdamW with cosine decay (float16
autocast + GradScaler on CUDA; bfloat16 autocast on CPUs that compute it natively,
:mod:`training.precision`), checkpoints every epoch without pickle (:mod:`training.checkpoints`)
so ``resume=True`` continues bit-for-bit, keeps the weights with the best validation mIoU and
writes them with :func:`worker.engine.network.write_package`; the package's val/test metrics are then
measured through the production tiled path (:mod:`training.evaluation`). Never downloads
anything: encoders are randomly initialised.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.geometry import DEFAULT_GEOMETRY, TileGeometry, model_tile_size
from models.package import MODEL_JSON, ModelPackage, read_package
from training.averaging import WeightAverage
from training.checkpoints import CheckpointError, load_checkpoint, read_state, save_checkpoint
from training.confusion import confusion_matrix, miou
from training.datasets import DatasetError, load_dataset_spec, load_split
from training.losses import class_pixel_counts, class_weights_inv_sqrt, segmentation_loss
from training.precision import (
    CPU_BF16_MODES,
    F32_CONVS_LADDER,
    choose_cpu_bf16,
    inference_bf16_agreement,
)
from training.recipe import (
    TTA_MODES,
    choose_class_weights,
    choose_input_scale,
    choose_tta,
    encoder_for_scale,
    fit_time_budget,
    geometry_for_scale,
    one_cycle_lr,
)
from training.sampling import AUGMENTS, BORDERS, PatchSampler, build_augmentation, pad_as_served
from worker.engine.network import to_image_scale, to_model_scale, write_package
from worker.engine.runtimes import cpu_has_bf16

__all__ = ["TARGETS", "channel_stats", "final_eval_estimate_s", "reduce_fractions", "reduce_pair",
           "serving_tile_s",
           "train", "validate"]

#: What the loss compares the model with at a reduced input scale: ``labels``, the class of
#: the nearest image pixel of each model pixel; ``fractions``, the share of each class in the
#: image pixels it covers (:func:`reduce_fractions`).
TARGETS = ("labels", "fractions")


def channel_stats(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (H, W, 3) uint8 images, values scaled to [0, 1]."""
    n, s, s2 = 0, np.zeros(3), np.zeros(3)
    for img in images:
        x = img.reshape(-1, 3).astype(np.float64) / 255.0
        n, s, s2 = n + x.shape[0], s + x.sum(0), s2 + (x * x).sum(0)
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(max(float(v), 1e-3), 6) for v in std]


def to_tensor(batch: np.ndarray, mean, std, device: str = "cpu"):
    """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float32 tensor, channels_last."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).float().div_(255.0)
    x = (x - torch.tensor(mean, device=device)) / torch.tensor(std, device=device)
    return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def validate(model, package: ModelPackage, data, geometry: TileGeometry,
             device: str = "cpu") -> np.ndarray:
    """Summed (C, C) int64 confusion matrix of ``model`` over ``data`` (see
    :func:`training.datasets.load_split`), predicted through the production tiled path
    (:meth:`worker.engine.segmenter.Segmenter.segment_array` at ``geometry``), so the epoch
    kept is the best one as it will be served. Leaves ``model`` in eval mode.

    Args:
        package: What ``model`` is (classes, normalisation); its sha256 is not checked.
    """
    from worker.engine.segmenter import Segmenter

    seg = Segmenter.from_model(package, model, device=device)
    conf = np.zeros((package.n_classes, package.n_classes), np.int64)
    for img, mask in data:
        conf += confusion_matrix(seg.segment_array(img, geometry), mask, package.n_classes)
    return conf


def _centre_crop(data, crop: int | None):
    """Centre crops of at most ``crop`` x ``crop`` px of (image, mask) pairs (None: as is)."""
    if not crop:
        return data
    out = []
    for img, mask in data:
        h, w = mask.shape
        y, x = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        out.append((img[y:y + crop, x:x + crop], mask[y:y + crop, x:x + crop]))
    return out


def _check_scale(scale: float, geometry: TileGeometry) -> None:
    """Raises ValueError: ``scale`` outside (0, 1]; GeometryError (a ValueError): the tile
    size at it not a multiple of 32 model px (:func:`core.geometry.model_tile_size`)."""
    if not 0 < scale <= 1:
        raise ValueError(f"input_scale must be in (0, 1], got {scale}")
    model_tile_size(geometry.tile_size, scale)


def reduce_pair(image: np.ndarray, mask: np.ndarray, scale: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """A training pair at a package's ``input_scale``: the (H, W, 3) uint8 image reduced by
    area averaging (rounded to uint8), the (H, W) uint8 class indices by the nearest pixel
    (:func:`worker.engine.network.to_model_scale`, the reduction serving applies to tiles).
    At ``scale == 1`` the pair comes back unchanged."""
    if scale == 1:
        return image, mask
    import torch

    # arrays read from image files may be read-only: torch wants a writable one
    x = torch.from_numpy(image if image.flags.writeable else image.copy())
    x = x.permute(2, 0, 1)[None].float()
    small = to_model_scale(x, scale)[0].round_().clamp_(0, 255).to(torch.uint8)
    m = torch.from_numpy(mask if mask.flags.writeable else mask.copy())
    labels = to_model_scale(m[None, None], scale, labels=True)[0, 0]
    return small.permute(1, 2, 0).contiguous().numpy(), labels.contiguous().numpy()


def reduce_fractions(mask: np.ndarray, n_classes: int, scale: float) -> np.ndarray:
    """Soft training targets at a package's ``input_scale``: for each model pixel, the share
    of each class among the image pixels it covers (each class's indicator reduced by area
    averaging, :func:`worker.engine.network.to_model_scale`, the reduction the image gets),
    so a model pixel over a grain boundary or a thin lamella is asked for the mixture it
    sees instead of the class of one image pixel. The same reduction defines the round-trip
    IoU that chooses the scale (:func:`training.recipe.round_trip_iou`).

    Args:
        mask: (H, W) uint8 class indices; values >= ``n_classes`` (ignored) count in no class.
        n_classes: C.
        scale: Model px per image px, in (0, 1].

    Returns:
        (h, w, C) uint8, share x 255 rounded (h, w as :func:`reduce_pair`'s); the C values of
        a pixel sum to about 255 x its labelled share.
    """
    import torch

    m = torch.from_numpy(np.ascontiguousarray(mask))
    planes = [to_model_scale((m == c).float()[None, None], scale)[0, 0] for c in range(n_classes)]
    return (torch.stack(planes, -1) * 255).round_().to(torch.uint8).numpy()


def _package_meta(spec, stems, data, *, name, version, arch, encoder, arch_params, mean, std,
                  geometry: TileGeometry) -> dict[str, Any]:
    colours = spec.display_colours()
    counts = class_pixel_counts([m for _, m in data], len(spec.classes))
    described = spec.describe(stems)
    described["train_class_pixels"] = {c.name: int(n) for c, n in zip(spec.classes, counts, strict=True)}
    described["train_class_percent"] = {c.name: round(100 * float(n) / max(1, counts.sum()), 3)
                                        for c, n in zip(spec.classes, counts, strict=True)}
    described["train_image_sizes"] = sorted({f"{m.shape[1]}x{m.shape[0]}" for _, m in data})
    return {"name": name, "version": str(version), "architecture": arch, "encoder": encoder,
            "arch_params": dict(arch_params or {}), "in_channels": 3,
            "classes": [{"index": i, "name": c.name, "label_value": c.value, "pellet": c.pellet,
                         "role": c.role,
                         "rgb": colours[i]} for i, c in enumerate(spec.classes)],
            "normalisation": {"mean": mean, "std": std}, **geometry.as_dict(),
            "um_per_px": spec.um_per_px,
            "training": {"data": described}}


def train(dataset_yaml: str | Path, *, arch: str = "Unet", encoder: str = "resnet34",
          epochs: int, out_dir: str | Path, name: str, version: str, patch_size: int = 256,
          batch_size: int = 8, lr: float = 1e-3, seed: int = 0,
          arch_params: dict[str, Any] | None = None, device: str = "cpu",
          steps_per_epoch: int | None = None, half_weights: bool = True, progress: bool = True,
          dice_weight: float = 0.0, class_weights: str | list[float] | None = None,
          geometry: TileGeometry | None = DEFAULT_GEOMETRY,
          augment: str = "default", p_targeted: float = 0.5, val_crop: int | None = None,
          amp: bool = True, resume: bool = False, checkpoint_dir: str | Path | None = None,
          max_minutes: float | None = None, final_eval: bool = True,
          on_epoch_end: Callable[[int, dict], None] | None = None,
          time_budget_s: float | None = None, warmup: float = 0.03,
          final_lr_fraction: float = 0.01, validate_each_epoch: bool = True,
          init_from: str | Path | None = None, average_tau: float | None = None,
          input_scale: float | str | None = None,
          input_scale_choice: dict[str, Any] | None = None,
          class_weights_choice: dict[str, Any] | None = None,
          recipe: dict[str, Any] | None = None,
          call_budget_s: float | None = None,
          call_started: float | None = None, targets: str = "labels",
          cpu_bf16: str = "off", scale_jitter: float = 0.0, members: int = 1,
          border: str = "none", tta: str = "none") -> ModelPackage:
    """Train a randomly initialised smp model on ``dataset_yaml`` and write a model package.

    Samples ``steps_per_epoch`` batches of ``batch_size`` (patch_size, patch_size) patches per
    epoch (default: about one pass over the training pixels; a fraction ``p_targeted`` centred
    on a class drawn uniformly, see :class:`PatchSampler`), augmented as ``augment`` (see
    :func:`training.sampling.build_augmentation`); loss = cross-entropy (weighted by
    ``class_weights``: C floats, ``"inv_sqrt"``, or ``"auto"``:
    :func:`training.recipe.choose_class_weights` on the training masks, recorded in the card
    as ``training.class_weights_choice``; ``class_weights_choice``: that record when the
    weights were chosen before the call) + ``dice_weight`` * soft dice; AdamW
    (weight decay 1e-4) with cosine decay of ``lr``; float16 autocast and a GradScaler on
    CUDA when ``amp``. After each epoch the val-split mIoU is measured on whole images (or
    their centre ``val_crop`` px) through the production tiled path at ``geometry`` (the
    tile size and halo recorded in the package, so evaluation and serving use them too;
    :func:`validate`), and a checkpoint is written to
    ``checkpoint_dir`` (default ``out_dir/checkpoint``). The best epoch's weights (the last
    one without a val split) go to ``out_dir`` (model.json + weights.safetensors, float16 if
    ``half_weights``) with the training images' per-channel mean/std (RGB in [0, 1]) and a
    description of the training data; with ``final_eval``, the val and test metrics of the
    stored package are then measured through the tiled production path
    (:func:`training.evaluation.evaluate_package`, the package's geometry).

    Deterministic for a given ``seed`` on the same machine and thread count on CPU (CUDA
    kernels may not be); ``resume=True`` after an interruption gives the same weights as an
    uninterrupted run. ``max_minutes`` stops after the first epoch that ends past that much
    wall time in this call (the package then records ``stopped_early``).

    With ``time_budget_s`` (the default recipe, :mod:`training.recipe`) the run is fitted to
    wall-clock time instead of ``epochs``: the learning rate follows
    :func:`training.recipe.one_cycle_lr` of the fraction of ``time_budget_s`` spent in training
    steps (``warmup``, ``final_lr_fraction``), training stops when the budget is spent, and
    ``epochs`` only bounds the number of checkpoints (one every ``steps_per_epoch`` steps).
    Such runs are not bit-for-bit reproducible (the step count depends on the machine's
    speed); ``resume`` continues the schedule where the time spent left it.
    ``call_budget_s`` (instead of ``time_budget_s``): the wall seconds the whole call may
    take, counted from ``call_started`` (a ``time.monotonic()`` value; default: when this
    function began); ``time_budget_s`` is then fitted to it before the first step
    (:func:`training.recipe.fit_time_budget`: less the set-up spent so far and a reserve for
    the final evaluation, estimated from one measured forward pass of a tile times the tiles
    of the val/test images plus their metrics timed per px, :func:`final_eval_estimate_s`,
    the forward passes twice on a CPU with bfloat16
    units, where the final evaluation also checks the package's serving precision) and
    recorded in the model card
    (``training.time_budget``); ``resume`` keeps the checkpoint's.
    ``validate_each_epoch=False`` skips the per-epoch validation and keeps the last weights.

    ``init_from``: a model package folder to fine-tune: its architecture, encoder, arch_params,
    normalisation and weights are taken; its class table (names and label values, in order)
    must equal the dataset's. ``recipe``: the recipe's choices, recorded in the model card
    (``training.recipe``).

    ``input_scale``: the model's pixels per image pixel, in (0, 1], or ``"auto"``
    (:func:`training.recipe.choose_input_scale` on the training masks, recorded in the model
    card as ``training.input_scale_choice``; ``input_scale_choice``: that record when the
    scale was chosen before the call, :func:`training.recipe.resolve_recipe`); default:
    ``init_from``'s, else 1. The training
    images are reduced by it (area averaging; masks: nearest pixel,
    :func:`worker.engine.network.to_model_scale`) before patches are drawn, so a 256 px patch
    at 0.5 covers 512 image px, and the package records it, so validation and serving reduce
    each tile the same way (:attr:`models.package.ModelPackage.input_scale`). The model card
    describes the data at its own resolution.

    ``targets`` (at an input scale < 1): ``"labels"``, the loss compares the model with the
    reduced masks' class indices; ``"fractions"``, with each model pixel's class shares
    (:func:`reduce_fractions`; :func:`training.losses.segmentation_loss`). At scale 1 both
    are the masks' labels.

    ``cpu_bf16`` (on CPU): ``"on"`` / ``"off"`` bfloat16 autocast for the forward pass,
    ``"auto"`` measure a step both ways and take the faster (:func:`training.precision.
    choose_cpu_bf16`; recorded in the model card as ``training.cpu_bf16``).

    ``scale_jitter``: random zoom of each patch by a factor in [1 / (1 + j), 1 + j]
    (:class:`training.sampling.PatchSampler`); 0: none.

    ``members``: train a deep ensemble of this many networks at once
    (:class:`worker.engine.ensemble.Ensemble`, recorded as the package's ``members``): each
    step feeds the same batch to every member and the loss is the mean of the members' losses,
    so a member gets the steps a single network would in 1 / ``members`` of the time; with
    ``init_from``, that package's count.

    ``border``: ``"halo"`` pads every training image (at the input scale) with the reflect
    padding serving gives an image, the halo of ``geometry`` in model px, its mask ignored
    there (:func:`training.sampling.pad_as_served`), so patches at the edges see what edge
    tiles see; ``"none"``: image pixels only.

    ``tta``: the package's test-time augmentation (``"none"``, ``"flips"``; its final
    evaluation is served with it), or ``"auto"``: :func:`training.recipe.choose_tta` on a
    tile's serving time without and with flips (:func:`serving_tile_s`), measured at set-up
    and recorded in the card as ``training.tta_choice``.

    ``encoder`` ``"auto"``: :func:`training.recipe.encoder_for_scale` of the input scale.

    ``geometry`` None: the default for the scale (:func:`training.recipe.geometry_for_scale`:
    1024/128 image px at 1 and 0.5, 2048/256 at 0.25).

    ``average_tau``: keep an exponential moving average of the weights with this time constant
    (fraction of the run: of the time budget, else of ``epochs * steps_per_epoch`` steps;
    :class:`training.averaging.WeightAverage`); the averaged weights are then the ones
    validated and packaged (the last raw weights stay in the checkpoint).

    Returns:
        The written :class:`ModelPackage`.

    Raises:
        DatasetError: invalid dataset description, images or masks; no ``train`` split.
        ModelPackageError: unknown ``arch``/``encoder``/``arch_params``.
        CheckpointError: ``resume`` without a checkpoint, with a corrupt one or one written
            with other settings; or a checkpoint exists and ``resume`` is False.
        ValueError: ``patch_size`` not a multiple of 32 or larger than a training image (at
            ``input_scale``); ``input_scale`` outside (0, 1], or the tile size at it not a
            multiple of 32;
            epochs or batch size < 1; ``class_weights`` of the wrong length or kind; unknown
            ``augment``, ``targets``, ``border`` or ``cpu_bf16``, or ``border`` ``halo``
            with ``targets`` ``fractions``; ``scale_jitter`` < 0; ``members``
            outside 1-8; ``init_from``'s class table differs from the dataset's (names both).
    """
    import segmentation_models_pytorch as smp
    import torch

    from worker.engine.network import build_model

    t0 = time.monotonic()
    if patch_size % 32 or patch_size < 32:
        raise ValueError(f"patch_size must be a positive multiple of 32, got {patch_size}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    if cpu_bf16 not in CPU_BF16_MODES:
        raise ValueError(f"cpu_bf16 must be one of {CPU_BF16_MODES}, got {cpu_bf16!r}")
    if scale_jitter < 0:
        raise ValueError(f"scale_jitter must be >= 0, got {scale_jitter}")
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if border != "none" and targets != "labels":
        raise ValueError(f"border {border!r} needs targets 'labels', got {targets!r}")
    if not 1 <= members <= 8:
        raise ValueError(f"members must be 1-8, got {members}")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else Path(out_dir) / "checkpoint"
    if not resume and read_state(ckpt_dir) is not None:
        raise CheckpointError(f"{ckpt_dir} holds a checkpoint: pass --resume to continue it, or "
                              "delete it (or choose another --out) to start anew")
    spec = load_dataset_spec(dataset_yaml)
    stems = spec.split_stems()
    if not stems.get("train"):
        raise DatasetError(f"{dataset_yaml}: the 'train' split is empty or missing")
    base = _base_package(init_from, spec) if init_from is not None else None
    if base is not None:
        members = base.members
    scale = input_scale if input_scale is not None else (base.input_scale if base else 1.0)
    if scale != "auto":
        geometry = geometry or geometry_for_scale(scale)
        _check_scale(scale, geometry)
    data = {k: load_split(spec, v) for k, v in stems.items() if k in ("train", "val", "test")}
    train_data = data["train"]  # at the images' own resolution, for the model card
    scale_choice = input_scale_choice
    if scale == "auto":
        scale, scale_choice = choose_input_scale(
            [m for _, m in train_data], len(spec.classes),
            geometry.tile_size if geometry else None, patch_size)
        geometry = geometry or geometry_for_scale(scale)
        if progress:
            print(f"input scale {scale:g}: {scale_choice['reason']}")
    if encoder == "auto":
        encoder = encoder_for_scale(scale, device)
    data["train"] = [reduce_pair(img, mask, scale) for img, mask in train_data]
    n_classes = len(spec.classes)
    fractions = [reduce_fractions(mask, n_classes, scale) for _, mask in train_data] \
        if targets == "fractions" and scale != 1 else None
    mean, std = channel_stats([img for img, _ in data["train"]])
    border_px = round(geometry.halo * scale) if border == "halo" else 0
    data["train"] = [pad_as_served(img, mask, border_px) for img, mask in data["train"]]
    if base is not None:
        arch, encoder, arch_params = base.architecture, base.encoder, dict(base.arch_params)
        mean, std = list(base.normalisation.mean), list(base.normalisation.std)
    cw_choice = class_weights_choice
    if class_weights == "auto":
        class_weights, cw_choice = choose_class_weights([m for _, m in train_data], n_classes)
        if progress:
            print(f"class weights {class_weights or 'none'}: {cw_choice['reason']}")
    cw_arg = class_weights
    if class_weights == "inv_sqrt":
        class_weights = class_weights_inv_sqrt([m for _, m in data["train"]], n_classes)
    elif class_weights is not None and (isinstance(class_weights, str)
                                        or len(class_weights) != n_classes):
        raise ValueError(f"class_weights must be 'inv_sqrt' or {n_classes} floats, "
                         f"got {class_weights!r}")
    weight = None if class_weights is None else torch.tensor(class_weights, device=device)
    if steps_per_epoch is None:
        pixels = sum(m.size for _, m in data["train"])
        steps_per_epoch = max(1, round(pixels / (patch_size**2 * batch_size)))
    dev_type = torch.device(device).type
    use_amp = bool(amp and dev_type == "cuda")
    config = {"dataset": str(Path(dataset_yaml).resolve()), "name": name, "version": str(version),
              "arch": arch, "encoder": encoder, "arch_params": dict(arch_params or {}),
              "epochs": epochs, "steps_per_epoch": steps_per_epoch, "patch_size": patch_size,
              "batch_size": batch_size, "lr": lr, "seed": seed, "dice_weight": dice_weight,
              "class_weights": cw_arg, "augment": augment, "p_targeted": p_targeted,
              "val_crop": val_crop, "amp": use_amp, **geometry.as_dict(),
              "half_weights": half_weights, "time_budget_s": time_budget_s,
              "init_from": str(init_from) if init_from else None}
    if average_tau:
        config["average_tau"] = average_tau
    if scale != 1:
        config["input_scale"] = scale
    if fractions is not None:
        config["targets"] = targets
    if cpu_bf16 != "off":
        config["cpu_bf16"] = cpu_bf16
    if scale_jitter:
        config["scale_jitter"] = scale_jitter
    if members != 1:
        config["members"] = members
    if border != "none":
        config["border"], config["border_px"] = border, border_px

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    meta = _package_meta(spec, stems, train_data, name=name, version=version, arch=arch,
                         encoder=encoder, arch_params=arch_params, mean=mean, std=std,
                         geometry=geometry)
    meta["input_scale"], meta["members"] = scale, members
    del train_data
    # Validates meta (dummy sha) and builds the network before any time is spent training.
    described = ModelPackage.model_validate({**meta, "weights_sha256": "0" * 64})
    model = build_model(described)
    if init_from is not None:
        from worker.engine.network import load_weights

        load_weights(model, init_from)
    model = model.to(device).to(memory_format=torch.channels_last)
    sampler = PatchSampler(data["train"], n_classes, patch_size, rng, p_targeted=p_targeted,
                           transform=build_augmentation(augment), targets=fractions,
                           scale_jitter=scale_jitter)
    val = _centre_crop(data.get("val") or [], val_crop) if validate_each_epoch else []
    use_bf16, bf16_record = choose_cpu_bf16(cpu_bf16, model, batch_size, patch_size, n_classes,
                                            device)
    tile_s, tta_choice = None, None  # a served tile's seconds, once measured
    if tta == "auto":
        plain_s = serving_tile_s(model, geometry.tile_size, scale, device)
        flips_s = serving_tile_s(model, geometry.tile_size, scale, device, flips=True)
        tta, tta_choice = choose_tta(plain_s, flips_s)
        tile_s = flips_s if tta == "flips" else plain_s
        if progress:
            print(f"test-time augmentation: {tta_choice['reason']}")
    meta["tta"] = tta
    if progress and cpu_bf16 == "auto":
        print(f"precision: {bf16_record['reason']}")
    average = WeightAverage(model, average_tau) if average_tau else None
    time_budget = None
    if call_budget_s is not None and time_budget_s is None:
        state0 = read_state(ckpt_dir) if resume else None
        if state0 is not None and state0["config"].get("time_budget_s"):
            time_budget_s = state0["config"]["time_budget_s"]  # the schedule it started
        else:
            evaluated = [pair for k in ("val", "test") for pair in (data.get(k) or [])]
            # with bfloat16 units the serving-precision check labels the images once more per
            # rung of leading float32 convolutions it may try (training.precision)
            if final_eval and evaluated and tile_s is None:  # a tile as the package serves
                tile_s = serving_tile_s(model, geometry.tile_size, scale, device,
                                        flips=tta == "flips")
            estimate = final_eval_estimate_s(model, evaluated, geometry, scale, device,
                                             label_passes=1 + len(F32_CONVS_LADDER)
                                             if cpu_has_bf16() else 1,
                                             tile_s=tile_s, n_classes=n_classes) \
                if final_eval and evaluated else None
            time_budget = fit_time_budget(call_budget_s,
                                          time.monotonic() - (call_started or t0), estimate)
            time_budget_s = time_budget["steps_s"]
            if progress:
                print(_describe_budget(time_budget))
        config["time_budget_s"] = time_budget_s
    if time_budget_s is not None:
        epochs = max(epochs, 10**6)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(dev_type, enabled=use_amp)
    best: tuple[float, int, dict | None] = (-1.0, 0, None)
    history: list[dict] = []
    start, prior_s = 1, 0.0
    if resume:
        state, best_sd = load_checkpoint(ckpt_dir, config=config, model=model, optimizer=opt,
                                         scheduler=sched, scaler=scaler, np_rng=rng,
                                         device=device, averaged=average)
        extra = state["extra"]
        start, history, prior_s = state["epoch"] + 1, extra["history"], extra["train_time_s"]
        best = (extra["best_score"], extra["best_epoch"], best_sd)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), disable=not progress)
    stopped_early = None
    t_loop = time.monotonic()
    steps_done = (start - 1) * steps_per_epoch
    budget_spent = False
    with bar:
        task = bar.add_task("training", total=None if time_budget_s else epochs * steps_per_epoch,
                            completed=(start - 1) * steps_per_epoch)
        for epoch in range(start, epochs + 1):
            model.train()
            losses = []
            for _ in range(steps_per_epoch):
                if time_budget_s is not None:
                    frac = (prior_s + time.monotonic() - t_loop) / time_budget_s
                    if frac >= 1 and losses:
                        budget_spent = True
                        break
                    for g in opt.param_groups:
                        g["lr"] = one_cycle_lr(frac, lr, warmup, final_lr_fraction)
                imgs, masks = sampler.batch(batch_size)
                x = to_tensor(imgs, mean, std, device)
                if fractions is None:
                    y = torch.from_numpy(masks.astype(np.int64)).to(device)
                else:  # (N, P, P, C) uint8 shares x 255 -> (N, C, P, P) float
                    y = torch.from_numpy(masks).to(device).permute(0, 3, 1, 2).float() / 255
                with torch.autocast(dev_type, dtype=torch.float16 if use_amp else torch.bfloat16,
                                    enabled=use_amp or use_bf16):
                    outs = model.member_logits(x) if members > 1 else [model(x)]
                loss = sum(segmentation_loss(z.float(), y, n_classes, dice_weight, weight)
                           for z in outs) / len(outs)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                if time_budget_s is None:
                    sched.step()
                steps_done += 1
                if average is not None:
                    average.update(model, (prior_s + time.monotonic() - t_loop) / time_budget_s
                                   if time_budget_s else steps_done / (epochs * steps_per_epoch))
                losses.append(loss.item())
                bar.update(task, advance=1, description=_describe(epoch, epochs, losses, history))
            entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5),
                     "steps": steps_done}
            kept = model if average is None else average.module
            if val:
                conf = validate(kept, described, val, geometry, device)
                entry["val_miou"] = round(miou(conf), 4)
            history.append(entry)
            bar.update(task, description=_describe(epoch, epochs, losses, history))
            score = entry.get("val_miou", float(epoch))
            if best[2] is None or score > best[0]:
                best = (score, epoch, copy.deepcopy(kept.state_dict()))
            elapsed = time.monotonic() - t_loop
            save_checkpoint(ckpt_dir, epoch=epoch, config=config, model=model, optimizer=opt,
                            scheduler=sched, scaler=scaler, np_rng=rng, best_state=best[2],
                            extra={"history": history, "best_score": best[0],
                                   "best_epoch": best[1], "train_time_s": prior_s + elapsed},
                            averaged=average)
            if progress:
                bar.console.print(f"epoch {epoch}: loss {entry['loss']:.4f}  val mIoU "
                                  f"{entry.get('val_miou', float('nan')):.4f}  steps {steps_done}"
                                  f"  lr {opt.param_groups[0]['lr']:.2e}  "
                                  f"{(prior_s + elapsed) / 60:.1f} min")
            if on_epoch_end is not None:
                on_epoch_end(epoch, entry)
            if budget_spent:
                break
            if max_minutes is not None and elapsed > 60 * max_minutes and epoch < epochs:
                stopped_early = {"after_epoch": epoch, "reason": f"time limit {max_minutes} min"}
                break
    train_s = prior_s + time.monotonic() - t_loop
    model.load_state_dict(best[2])
    meta["training"].update({
        "dataset": spec.name, "splits": {k: len(v) for k, v in stems.items()},
        "epochs": history[-1]["epoch"] if time_budget_s else epochs,
        "steps_per_epoch": steps_per_epoch, "steps": steps_done,
        "patches": steps_done * batch_size, "patch_size": patch_size,
        "batch_size": batch_size, "lr": lr,
        "optimizer": "AdamW(weight_decay=1e-4), " + (
            f"one-cycle over {time_budget_s:.0f} s of wall time (warm-up {warmup}, final "
            f"{final_lr_fraction} x lr)" if time_budget_s else "cosine over the epochs"),
        "time_budget_s": time_budget_s, "time_budget": time_budget,
        "validate_each_epoch": validate_each_epoch,
        "input_scale_choice": scale_choice, "class_weights_choice": cw_choice,
        "weight_average": None if average is None else {
            "kind": "exponential moving average of parameters and batch-norm buffers",
            "tau": average_tau},
        "init_from": None if base is None else {
            "name": base.name, "version": base.version, "sha256": base.weights_sha256,
            "path": str(Path(init_from).resolve())},
        "recipe": recipe, "minutes": round(train_s / 60, 2),
        "loss": "cross_entropy" + (f" + {dice_weight} * dice" if dice_weight > 0 else ""),
        "class_weights": None if class_weights is None else list(class_weights),
        "augmentation": augment, "scale_jitter": scale_jitter, "p_targeted": p_targeted,
        "border": border, "border_px": border_px, "tta_choice": tta_choice,
        "val_crop": val_crop, "targets": "fractions" if fractions is not None else "labels",
        "amp": "float16 autocast + GradScaler" if use_amp else (
            "bfloat16 autocast (CPU)" if use_bf16 else None), "cpu_bf16": bf16_record,
        "resumed": resume,
        "stopped_early": stopped_early, "seed": seed, "train_time_s": round(train_s, 1),
        "time_s": round(time.monotonic() - t0, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"device": device, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "segmentation_models_pytorch": smp.__version__,
                    "gpu": torch.cuda.get_device_name() if dev_type == "cuda" else None},
    })
    meta["metrics"] = {"best_epoch": best[1], "history": history}
    pkg = write_package(out_dir, model.cpu(), meta, half=half_weights)
    if final_eval and (data.get("val") or data.get("test")):
        pkg = _final_metrics(pkg, out_dir, data, stems, device)
        if progress:
            print(f"serving precision on CPU: {pkg.metrics['cpu_bf16_agreement']['reason']}")
    return pkg


def serving_tile_s(model, side: int, input_scale: float, device: str, *,
                   flips: bool = False) -> float:
    """Seconds one (1, 3, T, T) tile takes the way serving labels it: reduced to the model
    tile at ``input_scale`` (:func:`worker.engine.network.to_model_scale`), the forward pass
    (with ``flips``: the mean over the tile's four flips, :func:`worker.engine.segmenter.
    flip_mean`), the logits back to (T, T) (:func:`~worker.engine.network.to_image_scale`),
    softmax and argmax (at 0.125 the image-scale steps cost more than the model: run 33 of
    docs/models.md). Timed in eval mode, the fastest of 2 after a warm-up; the weights,
    batch-norm statistics and random state are not changed. Eager PyTorch: an upper bound for
    the CPU's compiled runtime.

    Raises:
        GeometryError: ``side * input_scale`` is not a multiple of 32 model px.
    """
    import torch

    from worker.engine.segmenter import flip_mean

    model_tile_size(side, input_scale)  # raises where the tile does not fit the scale
    tile = torch.zeros(1, 3, side, side, device=device)
    channels_last = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(3):
                start = time.perf_counter()
                x = channels_last(to_model_scale(tile, input_scale))
                logits = flip_mean(model, x, channels_last) if flips else model(x)
                to_image_scale(logits, (side, side)).softmax(1).max(1)
                if x.is_cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return min(times[1:])


def final_eval_estimate_s(model, data: list[tuple[np.ndarray, np.ndarray]],
                          geometry: TileGeometry, input_scale: float, device: str, *,
                          label_passes: int = 1, tile_s: float | None = None,
                          n_classes: int | None = None) -> float:
    """Seconds a final evaluation of ``data`` (pairs of (H, W, 3) uint8 image and (H, W) uint8
    mask, image px) will take: ``label_passes`` x the forward passes (more than 1 where the
    package's serving precision is checked by labelling the images again, once per rung of
    :data:`training.precision.F32_CONVS_LADDER`) plus the metrics once.

    - Forward passes: the tiles of each image as serving lays them out
      (:func:`worker.engine.segmenter.serving_grid` at ``geometry``, image px, and
      ``input_scale``; an image that fits one tile gets one shorter tile), counted in full
      tiles by their area (a tile of half the tile size's area counts 0.5), times ``tile_s``,
      the seconds of one full tile as the package will be served (None:
      :func:`serving_tile_s` without flips, measured here).
    - Metrics: :func:`training.evaluation.evaluate_arrays` (confusion, edge weights,
      confidence, fractions) timed on the first pair (after a warm-up on its corner), with its
      mask as the prediction, per image px, times the px of all pairs (at 0.125 on LumenStone
      S2 ~20 s of the val evaluation's ~34 s: run 34 of docs/models.md), for ``n_classes``
      classes (None: the output channels of the model's last convolution).
    """
    from training.evaluation import evaluate_arrays
    from worker.engine.segmenter import serving_grid

    tiles = 0.0
    for img, _ in data:
        grid = serving_grid(img.shape[1], img.shape[0], geometry, input_scale)
        tiles += grid.tile_pixels / geometry.tile_size ** 2
    if tile_s is None:
        tile_s = serving_tile_s(model, geometry.tile_size, input_scale, device)
    n = n_classes or _n_outputs(model)
    img, mask = data[0]
    labels = np.where(mask < n, mask, 0).astype(np.uint8)
    confidence = np.full(mask.shape, 255, np.uint8)
    names = [str(i) for i in range(n)]
    # a warm-up on a corner (first-call costs), then the whole pair timed
    evaluate_arrays(lambda _: (labels[:32, :32], confidence[:32, :32]),
                    [(img[:32, :32], mask[:32, :32])], names)
    start = time.perf_counter()
    evaluate_arrays(lambda _: (labels, confidence), [(img, mask)], names)
    per_px = (time.perf_counter() - start) / mask.size
    return label_passes * tiles * tile_s + per_px * sum(m.size for _, m in data)


def _n_outputs(model) -> int:
    """C, the output channels of a network (its last convolution's), for the metrics' names."""
    import torch

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1].out_channels


def _describe_budget(b: dict) -> str:
    evaluation = "no final evaluation" if b["final_eval_estimate_s"] is None else (
        f"final evaluation ~{b['final_eval_estimate_s']:.0f} s measured, "
        f"{b['final_eval_reserve_s']:.0f} s reserved")
    return (f"time budget: {b['steps_s'] / 60:.1f} min of steps (call {b['call_s'] / 60:.1f} min, "
            f"set-up {b['setup_s']:.0f} s, {evaluation})")


def _base_package(folder: str | Path, spec) -> ModelPackage:
    """The package to fine-tune from ``folder``, checked against the dataset's class table.

    Raises:
        ModelPackageError: not a readable package (or its weights fail their sha256).
        ValueError: its classes (name, label value, in order) differ from the dataset's; the
            message names both tables.
    """
    base = read_package(folder)
    theirs = [(c.name, c.label_value) for c in base.classes]
    ours = [(c.name, c.value) for c in spec.classes]
    if theirs != ours:
        diff = [f"class {i}: model {t} vs dataset {o}"
                for i, (t, o) in enumerate(zip(theirs, ours, strict=False)) if t != o]
        if len(theirs) != len(ours):
            diff.append(f"model has {len(theirs)} classes, dataset {len(ours)}")
        raise ValueError(
            f"--from {folder}: model {base.name} {base.version} has classes "
            f"{[f'{n}={v}' for n, v in theirs]} but dataset {spec.name} has "
            f"{[f'{n}={v}' for n, v in ours]} ({'; '.join(diff)}); fine-tuning needs the same "
            "class table (names and values, in order): edit the dataset's classes or train "
            "without --from")
    return base


def _describe(epoch: int, epochs: int, losses: list[float], history: list[dict]) -> str:
    last = next((h["val_miou"] for h in reversed(history) if "val_miou" in h), None)
    val = f"  val mIoU {last:.3f}" if last is not None else ""
    return f"epoch {epoch}/{epochs} loss {np.mean(losses):.4f}{val}"


def _final_metrics(pkg: ModelPackage, out_dir, data, stems, device: str) -> ModelPackage:
    """Val/test metrics of the written package through the tiled production path, and whether
    it may be served in bfloat16 on CPU (:func:`training.precision.inference_bf16_agreement`
    on the val images, else the test images: ``cpu_precision`` and
    ``metrics["cpu_bf16_agreement"]``), stored in its model.json (the weights and their
    sha256 are unchanged)."""
    from training.evaluation import evaluate_package

    metrics = dict(pkg.metrics)
    checked = "val" if data.get("val") else "test"  # the serving-precision check's images
    reference: list | None = [] if device.startswith("cpu") else None  # eager fp32 labels
    for split in ("val", "test"):
        if data.get(split):
            m = evaluate_package(out_dir, data[split], device=device,
                                 labels_out=reference if split == checked else None)
            metrics[f"{split}_miou"] = m["miou"]
            metrics[f"{split}_iou"] = {c["name"]: c["iou"] for c in m["per_class"]}
            metrics[f"{split}_pixel_accuracy"] = m["pixel_accuracy"]
            metrics[f"{split}_confusion"] = m["confusion_matrix"]
            served = m["inference"]
    metrics["evaluated_with"] = (f"tiled inference (tile {served['tile_size']}, halo "
                                 f"{served['halo']}, tta {served['tta']}), "
                                 "float16-stored weights")
    agreement = inference_bf16_agreement(out_dir, [img for img, _ in data[checked]],
                                         list(stems[checked]), reference=reference)
    metrics["cpu_bf16_agreement"] = agreement
    pkg = pkg.model_copy(update={"metrics": metrics, "cpu_precision": agreement["cpu_precision"],
                                 "cpu_f32_convs": agreement["cpu_f32_convs"]})
    (Path(out_dir) / MODEL_JSON).write_text(json.dumps(pkg.model_dump(mode="json"), indent=2)
                                            + "\n")
    return pkg
