"""The default training recipe: what ``pelletseg train DATASET --out DIR --max-minutes M``
chooses when no other option is given, fitted to the wall-clock budget and the device.

Choices (and why, for a few dozen labelled micrographs):

- **Model**: U-Net with a ResNet encoder (random init: nothing is downloaded) and a light
  decoder (128-64-32-16-8 channels); the encoder is chosen once the input scale is known
  (:func:`encoder_for_scale`): ResNet-34 on CUDA and wherever the model works at a reduced
  scale, ResNet-18 at full resolution on CPU. Measured on the 2-core development machine
  (2 torch threads, 256 px, batch 8, forward + backward + AdamW): ResNet-18 1.06 s/step with
  12.5 M parameters, MobileNetV2 1.13 s/step with 4.1 M (depthwise convolutions are slow on
  CPU), so ResNet-18 gives three times the capacity for the same time; ResNet-34 1.1-1.2
  s/step with 22.6 M. At input scale 0.25 ResNet-34 did better on LumenStone S2 (val mIoU
  of the runs in docs/models.md, "Encoder at a reduced scale"). Per 512 px tile ResNet-34
  costs 1.71 x ResNet-18's multiply-adds (23.3 against 13.7 GMAC with this decoder, counted
  by ``torch.utils.flop_counter``), and a model at 0.25 does 1/16 of the model work per image
  px (1/4 at 0.5), so the deeper encoder is used where its serving cost is small; at full
  resolution on CPU ResNet-18 keeps the worker's throughput.
- **Patches**: 256 px, batch 8 on CPU (512 px, batch 16 on CUDA); two thirds of the patches
  centred (+- P/4) on a pixel of a class drawn uniformly (rare phases are seen as often as
  common ones), the rest uniform crops (:class:`training.sampling.PatchSampler`).
- **Loss**: cross-entropy + 0.5 x soft dice, which weighs every class alike
  (:func:`training.losses.segmentation_loss`); rare phases are balanced by the sampling
  above. Cross-entropy class weights 1/sqrt(pixel share) on top of both only where a class
  holds under 0.5 % of the labelled training pixels (``auto``, :func:`choose_class_weights`).
  The threshold lies between the two datasets measured, so it is tuned on them: on
  LumenStone S2 (rarest class magnetite, 0.77 % of the train pixels, compact grains) the
  weights gave the same val mIoU over four seeds (0.747 against 0.750) but called more
  pyrrhotite pentlandite (pyrrhotite IoU 0.804 against 0.859, lower in every seed;
  docs/models.md, runs 21-22); on NASA EBC (thin cracks, 0.27 %) the recipe without them
  never predicted a crack (crack IoU 0.000 at scales 1 and 0.5) and with them reached crack
  0.31 / 0.26, val / test mIoU 0.707 / 0.690 against 0.633 / 0.620 (docs/models.md, run 32).
- **Augmentation**: flips, 90-degree rotations, mild brightness/contrast jitter and blur
  (``default`` of :func:`training.sampling.build_augmentation`); hue is left alone because
  reflectance colour identifies ore phases. A random zoom of each patch by up to
  :data:`ZOOM_JITTER` + 1 = 4 x (scale jitter, DeepLab's random rescaling, Chen et al. 2018;
  zooming out is capped by the image: 1.24 x for LumenStone at 0.125), so a phase the
  training masks hold only as grains is also seen as a large region: LumenStone S2's train
  masks hold no magnetite px more than 63 px inside a grain, while its val split holds
  3.1 M px in one image, in masses up to 333 px deep (``benchmarks.depth_recall``). Paired
  by seed on one machine it raised val mIoU 0.746 -> 0.757 (seed 2) and 0.741 -> 0.808
  (seed 0), magnetite in both (0.795 -> 0.831, 0.764 -> 0.840; docs/models.md, run 41).
- **Schedule**: one cycle over the *time* budget, not over a step count (Smith & Topin,
  "Super-convergence", 2019): AdamW, linear warm-up over the first 3 % of the budget to the
  peak rate, then cosine decay to 1 % of it when the budget ends (:func:`one_cycle_lr`), so
  the learning rate ends low whatever the machine's speed or load. Peak 2e-3 from scratch;
  fine-tuning (``--from``) uses 0.3 x that.
- **Input scale**: ``auto``: the model works at an eighth, a quarter or half of the image
  resolution (at 0.125 a 256 px patch covers 2048 image px, and serving costs 1/64 of the
  model work per image px) at the strongest of these reductions where every class of the
  training masks keeps a round-trip IoU of at least 0.92, else at full resolution
  (:func:`choose_input_scale`); a reduced model's default tile is 512 model px with a 64 px
  halo (:func:`geometry_for_scale`). Sections of large grains gain context per patch; thin
  cracks and small pores keep more pixels. LumenStone S2: 0.125 (worst class 0.9296), val mIoU
  0.703 (1) -> 0.720 (0.5) -> 0.750 (0.25, mean of four seeds) -> 0.759 (0.125, mean of four
  runs, every class >= 0.5 in each) (docs/models.md, runs 5, 9, 22, 30-33); NASA EBC: 0.5
  (cracks 0.936 there, 0.743 at 0.25; val mIoU 0.633 against 0.622 at full resolution, run
  32).
- **Border**: ``none``: patches hold image pixels only. ``--border halo`` trains on images
  padded the way tiled inference pads an image's edges (the halo, reflect, unlabelled;
  :func:`training.sampling.pad_as_served`): it removes a 0.125 model's loss to mirrored
  edges (0.741 -> 0.715 val mIoU from 64 to 1024 px of padding without it) but gave 0.716,
  0.775, 0.726 over three seeds against a mean of 0.759 without it (docs/models.md, runs
  34-35), so it is not the default.
- **Weight average**: the packaged weights are an exponential moving average of the
  trained ones with a time constant of 10 % of the run (:mod:`training.averaging`), which
  smooths the swings between nearby weights that six val images show: +0.059 val mIoU over
  the last weights of the same run on LumenStone S2 (docs/models.md, run 5).
- **Precision**: bfloat16 autocast on CPU where a measured step (the fastest of
  :data:`training.precision.MEASURED_STEPS` each way) is at least
  :data:`training.precision.MIN_BF16_SPEEDUP` x faster than in float32 (AMX or AVX-512 BF16
  units; :func:`training.precision.choose_cpu_bf16`), else float32; float16 autocast on CUDA.
  The Xeon of 2026-12-04 (AMX) steps 2.2 x faster in bfloat16, so a budget buys twice the
  steps there (docs/models.md, run 24).
- **Test-time flips** (``tta`` ``auto``, :func:`choose_tta`): the package is served with the
  mean of each tile's logits over its four flips where a tile with them takes at most
  :data:`TTA_MAX_COST` x the time without, measured at set-up the way serving runs a tile
  (:func:`training.trainer.serving_tile_s`). At input scale 0.125 the forward pass is a small
  part of a tile's time (the reduction and the logits back at image scale dominate): 1.8 x
  there, and +0.004 to +0.0135 val mIoU on each of four LumenStone S2 packages for ~1.2 x
  the evaluation's time (docs/models.md, runs 36-38); at full resolution the forward pass is
  most of it (3.6 x, +0.003: run 5), and at 0.25 flips moved packages by -0.002 to +0.004
  (runs 12, 14, 22), so flips stay off there.
- **Validation**: none during training (it costs minutes on a CPU, and choosing weights on
  six val images would report a selected figure); the package's val/test metrics are measured once
  at the end through the production tiled path.
- **Time budget**: the whole call fits in ``max_minutes``. Before the first step the trainer
  measures one forward pass of a tile and counts the tiles of the val/test images, and keeps
  :data:`EVAL_SAFETY` x that estimate + :data:`EVAL_FIXED_S` (loading the package, exporting it
  for the CPU runtime, writing model.json) for the final evaluation, at most
  :data:`MAX_EVAL_RESERVE` of the call (and 10 min); the rest, less the set-up already spent,
  is the steps' budget (:func:`fit_time_budget`). A fixed 15 % reserve left LumenStone S2's
  30 min calls ending after 26 min (docs/models.md).
"""

from __future__ import annotations

import math
from typing import Any

from training.precision import MIN_BF16_SPEEDUP

__all__ = ["AUTO_SCALES", "CPU_ENCODERS", "EVAL_FIXED_S", "EVAL_SAFETY", "MAX_EVAL_RESERVE",
           "MIN_ROUND_TRIP_IOU", "MIN_STEPS_SHARE", "RARE_CLASS_SHARE",
           "REDUCED_MODEL_GEOMETRY", "TTA_MAX_COST", "TTA_MODES", "ZOOM_JITTER",
           "choose_class_weights", "choose_input_scale", "choose_tta",
           "default_recipe", "describe_recipe", "encoder_for_scale", "fit_time_budget",
           "geometry_for_scale", "one_cycle_lr", "resolve_recipe", "round_trip_iou"]

#: Input scales ``auto`` tries, the strongest reduction first (1 when none passes).
AUTO_SCALES = (0.125, 0.25, 0.5)
#: The round-trip IoU every class must keep at a scale for ``auto`` to take it.
MIN_ROUND_TRIP_IOU = 0.92
#: ``auto`` class weights: 1/sqrt(pixel share) where a class present in the training masks
#: holds less than this share of their labelled pixels, else none.
RARE_CLASS_SHARE = 0.005
#: The tile and halo a reduced model sees by default (model px): 512 / 64.
REDUCED_MODEL_GEOMETRY = (512, 64)
#: The CPU recipe's encoder at full resolution and at a reduced input scale (CUDA: "reduced"
#: at every scale).
CPU_ENCODERS = {"full": "resnet18", "reduced": "resnet34"}
#: The final evaluation's reserve: its measured estimate (s) times this, plus
#: :data:`EVAL_FIXED_S`.
EVAL_SAFETY = 2.0
#: Seconds of the final evaluation that do not scale with its tiles: loading the package
#: twice (val, test), exporting it for the CPU runtime, writing model.json.
EVAL_FIXED_S = 30.0
#: The largest share of the call the final evaluation may reserve (and never over 10 min).
MAX_EVAL_RESERVE = 0.15
#: The smallest share of the call left to training steps, however long the set-up took.
MIN_STEPS_SHARE = 0.1
#: The default recipe's scale jitter J: each patch cut at P x r px, r log-uniform in
#: [1 / (1 + J), 1 + J] (capped by the image), and resized to P (run 41 of docs/models.md).
ZOOM_JITTER = 3.0
#: ``tta`` of ``pelletseg train``: as given (``none``, ``flips``) or chosen (``auto``).
TTA_MODES = ("auto", "none", "flips")
#: ``tta`` ``auto`` takes flips where a served tile with them takes at most this many times
#: the seconds of one without.
TTA_MAX_COST = 2.0


def one_cycle_lr(fraction: float, peak: float, warmup: float = 0.03,
                 final: float = 0.01) -> float:
    """Learning rate at ``fraction`` (0..1) of the time budget: linear warm-up from
    ``final * peak`` to ``peak`` over the first ``warmup`` of the budget, then cosine decay to
    ``final * peak`` at 1 (one-cycle policy, Smith & Topin 2019). Fractions above 1 give the
    final rate."""
    f = min(max(fraction, 0.0), 1.0)
    lo = final * peak
    if warmup > 0 and f < warmup:
        return lo + (peak - lo) * f / warmup
    t = (f - warmup) / max(1e-9, 1 - warmup)
    return lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * t))


def geometry_for_scale(scale: float):
    """The default tile geometry (image px) of a package at ``scale``: the default
    (:data:`core.geometry.DEFAULT_GEOMETRY`, 1024/128) at full resolution, else the larger
    of it and :data:`REDUCED_MODEL_GEOMETRY` in image px (0.5: 1024/128, 0.25: 2048/256), so
    a reduced model still sees 512 px tiles with a 64 px halo.

    Returns:
        :class:`core.geometry.TileGeometry`.
    """
    from core.geometry import DEFAULT_GEOMETRY, TileGeometry

    if scale == 1:
        return DEFAULT_GEOMETRY
    tile, halo = (round(v / scale) for v in REDUCED_MODEL_GEOMETRY)
    if tile <= DEFAULT_GEOMETRY.tile_size:
        return DEFAULT_GEOMETRY
    return TileGeometry(tile, halo)


def encoder_for_scale(scale: float, device: str = "cpu") -> str:
    """The recipe's encoder for a model at input ``scale`` (model px per image px, in (0, 1])
    on ``device``: ``CPU_ENCODERS["reduced"]`` (ResNet-34) on CUDA or when ``scale`` < 1,
    else ``CPU_ENCODERS["full"]`` (ResNet-18): the deeper encoder where its serving cost per
    image px is divided by ``1 / scale**2`` or a GPU pays it.

    Raises:
        ValueError: ``scale`` outside (0, 1].
    """
    if not 0 < scale <= 1:
        raise ValueError(f"input scale must be in (0, 1], got {scale}")
    reduced = device.startswith("cuda") or scale < 1
    return CPU_ENCODERS["reduced" if reduced else "full"]


def resolve_recipe(recipe: dict[str, Any], device: str = "cpu", masks: list | None = None,
                   n_classes: int = 0, tile_size: int | None = None) -> dict[str, Any]:
    """``recipe`` with its ``auto`` choices made, so the console and the package name show
    what was chosen: an ``"auto"`` ``input_scale`` by :func:`choose_input_scale` on the
    training ``masks`` ((H, W) uint8 class indices, ``n_classes`` classes; ``tile_size`` in
    image px, None: the scale's default), its record under ``input_scale_choice``; then an
    ``"auto"`` ``encoder`` by :func:`encoder_for_scale`; ``"auto"`` ``class_weights`` by
    :func:`choose_class_weights`, its record under ``class_weights_choice``. Other entries
    are kept as given.

    Returns:
        A new dict (``recipe`` is not changed).

    Raises:
        ValueError: ``input_scale`` or ``class_weights`` is ``"auto"`` and no ``masks`` are
            given.
    """
    r = dict(recipe)
    auto = [k for k in ("input_scale", "class_weights") if r.get(k) == "auto"]
    if auto and not masks:
        raise ValueError(f"'auto' {' and '.join(auto)} need the training masks to choose them")
    if r.get("input_scale") == "auto":
        r["input_scale"], r["input_scale_choice"] = choose_input_scale(
            masks, n_classes, tile_size, r["patch_size"])
    if r.get("class_weights") == "auto":
        r["class_weights"], r["class_weights_choice"] = choose_class_weights(masks, n_classes)
    if r.get("encoder") == "auto":
        r["encoder"] = encoder_for_scale(r.get("input_scale") or 1.0, device)
    return r


def round_trip_iou(masks: list, n_classes: int, scale: float) -> list[float]:
    """Per class, the IoU of label maps taken to ``scale`` and back the way a model's output
    comes back in serving: each class's indicator reduced by area averaging
    (:func:`worker.engine.network.to_model_scale`), interpolated back bilinearly
    (:func:`~worker.engine.network.to_image_scale`) and the argmax over classes, against the
    masks. It is the best IoU any model working at ``scale`` can reach on them.

    Args:
        masks: (H, W) uint8 class indices (values >= ``n_classes``, e.g. ignored pixels, are
            left out of both sides).
        n_classes: C.
        scale: Model px per image px, in (0, 1].

    Returns:
        C IoUs in [0, 1] (1.0 for a class absent from every mask).
    """
    import numpy as np
    import torch

    from worker.engine.network import to_image_scale, to_model_scale

    confusion = np.zeros((n_classes, n_classes), np.int64)  # [mask class, round-trip class]
    for mask in masks:
        mask = np.ascontiguousarray(mask)
        m = torch.from_numpy(mask)
        best = torch.full(m.shape, -1.0)
        back = torch.zeros(m.shape, dtype=torch.uint8)
        for c in range(n_classes):  # one class at a time: memory of a few (H, W) planes
            p = to_image_scale(to_model_scale((m == c).float()[None, None], scale), m.shape)[0, 0]
            take = p > best
            best = torch.where(take, p, best)
            back[take] = c
        valid = mask < n_classes
        pairs = mask[valid].astype(np.int64) * n_classes + back.numpy()[valid]
        confusion += np.bincount(pairs, minlength=n_classes * n_classes).reshape(
            n_classes, n_classes)
    inter = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - inter
    return [float(i / u) if u else 1.0 for i, u in zip(inter, union, strict=True)]


def choose_class_weights(masks: list, n_classes: int,
                         rare_share: float = RARE_CLASS_SHARE) -> tuple[str | None, dict[str, Any]]:
    """The ``auto`` cross-entropy class weights: ``"inv_sqrt"`` (1/sqrt of each class's pixel
    share, :func:`training.losses.class_weights_inv_sqrt`) where a class present in the
    training masks holds less than ``rare_share`` of their labelled pixels, else None (every
    class 1; the targeted sampling and the dice term balance the classes).

    Args:
        masks: (H, W) uint8 class indices (values >= ``n_classes``, e.g. ignored pixels, are
            not counted).
        n_classes: C.
        rare_share: Share of the labelled pixels (0..1) under which a class is rare.

    Returns:
        ``(class_weights, choice)``: ``choice`` holds ``chosen``, ``rare_share``, the per-class
        ``pixel_share`` (0..1, rounded to 1e-5) and a ``reason`` in words.

    Raises:
        ValueError: the masks hold no labelled pixel.
    """
    from training.losses import class_pixel_counts

    counts = class_pixel_counts(masks, n_classes)
    if not counts.sum():
        raise ValueError("the training masks hold no labelled pixel: no class weights to choose")
    share = counts / counts.sum()
    present = [c for c in range(n_classes) if counts[c]]
    rarest = min(present, key=lambda c: share[c])
    rare = share[rarest] < rare_share
    reason = (f"the rarest class (index {rarest}) holds {share[rarest]:.3%} of the labelled "
              f"training pixels, {'under' if rare else 'at least'} {rare_share:.1%}: "
              + ("1/sqrt(pixel share) weights" if rare else "no weights"))
    chosen = "inv_sqrt" if rare else None
    return chosen, {"chosen": chosen, "rare_share": rare_share,
                    "pixel_share": [round(float(v), 5) for v in share], "reason": reason}


def choose_input_scale(masks: list, n_classes: int, tile_size: int | None,
                       patch_size: int = 0,
                       candidates: tuple[float, ...] = AUTO_SCALES,
                       min_iou: float = MIN_ROUND_TRIP_IOU) -> tuple[float, dict[str, Any]]:
    """The ``auto`` input scale: the first of ``candidates`` at which every class keeps a
    :func:`round_trip_iou` of at least ``min_iou`` on the training masks, the tile size
    (px; None: :func:`geometry_for_scale`'s) stays a multiple of 32 px and every reduced mask
    still holds a ``patch_size`` px patch, else 1 (full resolution).

    Returns:
        ``(scale, choice)``: ``choice`` holds ``chosen``, ``min_iou``, the per-class
        round-trip IoU of each candidate tried (``round_trip_iou``) and a ``reason`` in words.
    """
    from core.geometry import GeometryError, model_size, model_tile_size

    tried: dict[str, list[float]] = {}
    smallest = min((min(m.shape[:2]) for m in masks), default=0)
    for scale in candidates:
        try:
            model_tile_size(tile_size or geometry_for_scale(scale).tile_size, scale)
        except GeometryError:
            continue
        if model_size(smallest, scale) < patch_size:
            continue
        ious = round_trip_iou(masks, n_classes, scale)
        tried[f"{scale:g}"] = [round(v, 4) for v in ious]
        if min(ious) >= min_iou:
            reason = (f"every class keeps a round-trip IoU >= {min_iou} at {scale:g} (worst "
                      f"{min(ious):.3f}): the model works at {scale:g} x the image resolution")
            return scale, {"chosen": scale, "min_iou": min_iou, "round_trip_iou": tried,
                           "reason": reason}
    worst = {k: min(v) for k, v in tried.items()}
    reason = (f"a class falls below a round-trip IoU of {min_iou} at every reduced scale "
              f"tried (worst {worst}): the model works at full resolution") if tried else \
        "no reduced scale fits the tile size and the patch size: the model works at full " \
        "resolution"
    return 1.0, {"chosen": 1.0, "min_iou": min_iou, "round_trip_iou": tried, "reason": reason}


def default_recipe(max_minutes: float, device: str = "cpu", *,
                   fine_tune: bool = False) -> dict[str, Any]:
    """The recipe for a budget of ``max_minutes`` (whole call) on ``device``: keyword
    arguments of :func:`training.trainer.train` plus ``call_budget_s`` (s of the whole call;
    the trainer fits the steps' budget to it, :func:`fit_time_budget`).

    Raises:
        ValueError: ``max_minutes`` is not positive.
    """
    if not max_minutes or max_minutes <= 0:
        raise ValueError(f"the default recipe needs a positive --max-minutes, got {max_minutes}")
    cuda = device.startswith("cuda")
    recipe: dict[str, Any] = {
        "arch": "Unet", "encoder": "auto",
        "arch_params": {"decoder_channels": [128, 64, 32, 16, 8]},
        "patch_size": 512 if cuda else 256, "batch_size": 16 if cuda else 8,
        "p_targeted": 2 / 3, "class_weights": "auto", "dice_weight": 0.5,
        "augment": "default", "lr": (0.3 if fine_tune else 1.0) * 2e-3,
        "schedule": "one-cycle over the time budget", "warmup": 0.03, "final_lr_fraction": 0.01,
        "validate_each_epoch": False, "steps_per_epoch": 100, "average_tau": 0.1,
        "input_scale": "auto", "targets": "labels", "cpu_bf16": "auto", "scale_jitter": ZOOM_JITTER,
        "members": 1, "border": "none", "tta": "auto",
        "call_budget_s": round(60 * max_minutes, 1),
    }
    return recipe


def choose_tta(tile_s: float, flips_s: float) -> tuple[str, dict[str, Any]]:
    """``tta`` ``auto``: ``flips`` where a served tile with flips takes at most
    :data:`TTA_MAX_COST` x the seconds of one without, else ``none``.

    Args:
        tile_s: Seconds of one tile served without flips (> 0).
        flips_s: Seconds of the same tile with flips.

    Returns:
        ``(tta, record)``: ``record`` holds both times, their ratio, the rule's limit and a
        ``reason`` in words (printed by the trainer, kept in the model card).

    Raises:
        ValueError: a time that is not positive.
    """
    if tile_s <= 0 or flips_s <= 0:
        raise ValueError(f"tile times must be > 0 s, got {tile_s} and {flips_s}")
    ratio = flips_s / tile_s
    tta = "flips" if ratio <= TTA_MAX_COST else "none"
    verdict = ("taken" if tta == "flips" else "not taken") + f" (up to {TTA_MAX_COST:g} x)"
    return tta, {"tta": tta, "tile_s": round(tile_s, 4), "flips_tile_s": round(flips_s, 4),
                 "cost": round(ratio, 3), "max_cost": TTA_MAX_COST,
                 "reason": f"a served tile takes {tile_s:.2f} s, {flips_s:.2f} s with flips "
                           f"({ratio:.2f} x): flips {verdict}"}


def fit_time_budget(call_budget_s: float, setup_s: float,
                    eval_estimate_s: float | None) -> dict[str, float | None]:
    """Split a call's wall-clock budget: seconds of training steps once ``setup_s`` are spent
    and the final evaluation, estimated at ``eval_estimate_s`` (None: no final evaluation),
    is reserved for (``EVAL_SAFETY * estimate + EVAL_FIXED_S``, at most ``MAX_EVAL_RESERVE`` of
    the call and 600 s). The steps get at least ``MIN_STEPS_SHARE`` of the call.

    Returns:
        ``{"call_s", "setup_s", "final_eval_estimate_s", "final_eval_reserve_s", "steps_s"}``
        (s, rounded to 0.1; the estimate to 0.001).

    Raises:
        ValueError: ``call_budget_s`` not positive, or a negative time.
    """
    if call_budget_s <= 0 or setup_s < 0 or (eval_estimate_s is not None and eval_estimate_s < 0):
        raise ValueError(f"times must be positive (call) or >= 0, got {call_budget_s}, "
                         f"{setup_s}, {eval_estimate_s}")
    reserve = 0.0 if eval_estimate_s is None else min(
        EVAL_SAFETY * eval_estimate_s + EVAL_FIXED_S, MAX_EVAL_RESERVE * call_budget_s, 600.0)
    steps = max(call_budget_s - setup_s - reserve, MIN_STEPS_SHARE * call_budget_s)
    return {"call_s": round(call_budget_s, 1), "setup_s": round(setup_s, 1),
            "final_eval_estimate_s": None if eval_estimate_s is None else round(eval_estimate_s, 3),
            "final_eval_reserve_s": round(reserve, 1), "steps_s": round(steps, 1)}


#: What each augmentation kind does, in the words ``describe_recipe`` prints.
_AUGMENT_WORDS = {
    "none": "none",
    "geometric": "flips, 90-degree rotations",
    "default": "flips, 90-degree rotations, mild brightness/contrast, blur",
    "luminance": "flips, 90-degree rotations, strong brightness/contrast (colour ratios kept), "
                 "blur",
    "photometric": "flips, 90-degree rotations, strong brightness/contrast, white-balance "
                   "gains, blur",
}


def describe_recipe(recipe: dict[str, Any]) -> str:
    """One line per choice, for the console."""
    r = recipe
    encoder = r["encoder"] if r["encoder"] != "auto" else (
        f"auto: {CPU_ENCODERS['reduced']} at a reduced input scale or on CUDA, "
        f"{CPU_ENCODERS['full']} at full resolution on CPU")
    lines = [
        f"model      {r['arch']} / {encoder} ("
        + (f"weights of {r['init_from']}" if r.get("init_from") else "random init")
        + f"), arch_params {r['arch_params']}"
        + (f"; a deep ensemble of {r['members']} such networks trained at once, their "
           "probabilities averaged" if r.get("members", 1) > 1 else ""),
        f"patches    {r['patch_size']} px, batch {r['batch_size']}, "
        f"{r['p_targeted']:.0%} centred on a class drawn uniformly",
        _describe_scale(r.get("input_scale", 1), r["patch_size"], r.get("input_scale_choice")),
        f"loss       cross-entropy (class weights {_describe_weights(r)}) + "
        f"{r['dice_weight']} x soft dice"
        + (", on class fractions at a reduced scale" if r.get("targets") == "fractions"
           else ""),
        f"augment    {r['augment']} ({_AUGMENT_WORDS.get(r['augment'], r['augment'])})"
        + (f", random zoom x 1/{1 + r['scale_jitter']:g}-{1 + r['scale_jitter']:g}"
           if r.get("scale_jitter") else "")
        + (", images padded as served (reflect, the halo), the padding unlabelled"
           if r.get("border", "none") == "halo" else ""),
        f"schedule   AdamW, {r['schedule']}: {r['call_budget_s'] / 60:g} min for the call, less "
        "the set-up and the final evaluation (measured before the first step); peak "
        f"lr {r['lr']:.1e}, warm-up {r['warmup']:.0%}, ends at {r['final_lr_fraction']:.0%}",
        ("weights    " + (f"moving average, time constant {r['average_tau']:.0%} of the run"
                          if r.get("average_tau") else "the last ones")),
        "validation once at the end (tiled production path)",
        "serving   " + {"auto": f" test-time flips where a tile with them takes <= "
                                 f"{TTA_MAX_COST:g} x the time without (measured)",
                         "flips": " test-time flips (4 forward passes per tile)",
                         "none": " one forward pass per tile"}[r.get("tta", "none")],
    ]
    if r.get("cpu_bf16", "off") != "off":
        lines.insert(-1, "precision  " + (
            "bfloat16 autocast on CPU" if r["cpu_bf16"] == "on" else
            f"auto: bfloat16 autocast on CPU where a measured step is >= {MIN_BF16_SPEEDUP:g} x "
            "faster than float32 (AMX / AVX-512 BF16), else float32")
            + "; float16 autocast on CUDA")
    return "\n".join(lines)


def _describe_weights(r: dict[str, Any]) -> str:
    if r.get("class_weights_choice"):
        return f"auto: {r['class_weights_choice']['reason']}"
    if r["class_weights"] == "auto":
        return (f"auto: 1/sqrt(pixel share) where a class holds under {RARE_CLASS_SHARE:.1%} of "
                "the labelled training pixels, else none")
    return str(r["class_weights"] or "none")


def _describe_scale(scale: float | str, patch: int, choice: dict | None = None) -> str:
    if choice:
        return f"scale      auto: {choice['reason']}"
    if scale == "auto":
        tried = " or ".join(f"{s:g}" for s in AUTO_SCALES)
        return (f"scale      auto: the strongest reduction ({tried} x) at which every class "
                f"keeps a round-trip IoU >= {MIN_ROUND_TRIP_IOU}, else full resolution")
    if scale == 1:
        return "scale      the images' own resolution"
    return (f"scale      images reduced to {scale:g} x (a {patch} px patch covers "
            f"{patch / scale:.0f} image px; tiles are served the same way)")
