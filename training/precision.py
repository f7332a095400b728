"""Precision on CPU: bfloat16 autocast in training where the processor computes it natively,
and whether a trained package may be served in bfloat16 (:func:`inference_bf16_agreement`).

On CPUs with AMX or AVX-512 BF16 units (Intel Sapphire Rapids and later, AMD Zen 4 and
later), oneDNN runs the convolutions of ``torch.autocast("cpu", dtype=torch.bfloat16)`` in
bfloat16 at about twice the float32 rate; elsewhere (e.g. AVX2-only Zen 2) bfloat16 is
emulated and slower. A time-budgeted run does more steps where it is faster, so the default
recipe decides by measurement (``"auto"``): forward and backward passes of the real model on
a batch of the run's shape, in float32 and in bfloat16 autocast, alternated three times
after one warm-up each, the fastest of each counting (a load beside the run touches both), on
a copy of the model (the run's weights, batch-norm statistics and random generators are not
touched), and bfloat16 is used when it is at least :data:`MIN_BF16_SPEEDUP` x faster.
The weights, the optimizer and the loss stay float32 (autocast casts only the inputs of
convolutions and matrix products); evaluation and serving run the packaged float32 weights.
Measured on the development machine's Intel Xeon with AMX (2 threads, ResNet-34 U-Net,
256 px, batch 8): 1.40-1.50 s float32, 0.65-0.68 s bfloat16 (docs/models.md, run 24).
Mixed precision training: Micikevicius et al., ICLR 2018; bfloat16: Kalamkar et al.,
"A study of BFLOAT16 for deep learning training", 2019.

Serving is decided per package, by its labels: OpenVINO in bfloat16 ran the bundled model
2.4x faster than in float32 on an AMX CPU but kept only 99.74 % of its float32 labels on
LumenStone images; with its first 9 convolutions in float32 it kept 99.933 % at 2.2x
(docs/performance.md, "Mixed precision"). So a package is marked for bfloat16
(``ModelPackage.cpu_precision``, ``cpu_f32_convs``) only where its own validation images
keep :data:`MIN_BF16_AGREEMENT_PCT` % each, with the fewest leading float32 convolutions of
:data:`F32_CONVS_LADDER` that do.
"""

from __future__ import annotations

import copy
import time
from typing import Any

__all__ = ["CPU_BF16_MODES", "F32_CONVS_LADDER", "MEASURED_STEPS", "MIN_BF16_AGREEMENT_PCT",
           "MIN_BF16_SPEEDUP", "choose_cpu_bf16", "inference_bf16_agreement"]

#: ``cpu_bf16`` values: measure and decide, always, never.
CPU_BF16_MODES = ("auto", "on", "off")
#: The measured float32 / bfloat16 step-time ratio at which ``auto`` takes bfloat16.
MIN_BF16_SPEEDUP = 1.2
#: Timed steps of each precision (after one warm-up each), alternated; the fastest counts.
MEASURED_STEPS = 3
#: % of the pixels of every validation image whose bfloat16 labels must equal the float32
#: ones for a package to be served in bfloat16 (issue 17's rule for any runtime).
MIN_BF16_AGREEMENT_PCT = 99.9
#: Leading convolutions kept in float32 tried in turn, fewest first, when serving in bfloat16
#: (``ModelPackage.cpu_f32_convs``): each rung is raised to the smallest count whose cut splits
#: no residual block (:func:`worker.engine.runtimes.float32_cuts`), and the ladder ends past
#: the graph's convolutions. The bundled MobileNetV2 U-Net needs 9 (its encoder down to 1/4
#: scale; 4: 99.84 % of the labels at worst), 18 is its encoder down to 1/8.
F32_CONVS_LADDER = (0, 4, 9, 18)


def _step_s(model, x, y, bf16: bool) -> float:
    """Seconds of one forward + backward pass of ``model`` on ``x``."""
    import torch
    import torch.nn.functional as F

    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def _fastest_steps(model, x, y, repeats: int = MEASURED_STEPS) -> tuple[float, float]:
    """The fastest of ``repeats`` timed steps in float32 and in bfloat16, alternated after one
    warm-up step of each (kernel selection), so a load that comes and goes during the
    measurement touches both alike and the minimum is the machine's own speed."""
    _step_s(model, x, y, False), _step_s(model, x, y, True)
    fp32, bf16 = [], []
    for _ in range(repeats):
        fp32.append(_step_s(model, x, y, False))
        bf16.append(_step_s(model, x, y, True))
    return min(fp32), min(bf16)


def choose_cpu_bf16(mode: str, model, batch_size: int, patch_size: int,
                    n_classes: int, device: str = "cpu") -> tuple[bool, dict[str, Any]]:
    """Whether a CPU training run uses bfloat16 autocast, and why.

    ``mode`` ``"on"`` / ``"off"``: as given (no measurement). ``"auto"``: on a CPU whose torch
    build reports AVX-512 (``torch.backends.cpu.get_cpu_capability()``, the kernels that can
    use AVX-512 BF16 and AMX), time steps of a copy of ``model`` on a random
    (``batch_size``, 3, ``patch_size``, ``patch_size``) batch (a private generator, so the
    run's random draws are unchanged) in float32 and in bfloat16 (:data:`MEASURED_STEPS`
    each, alternated, the fastest of each) and take bfloat16 if it is >= :data:`MIN_BF16_SPEEDUP`
    x faster; elsewhere float32 without measuring. Always False on
    a non-CPU ``device`` (CUDA uses float16 autocast, ``train(amp=True)``).

    Returns:
        ``(use_bf16, record)``: ``record`` holds ``mode``, ``used``, the measured seconds per
        step (``fp32_step_s``, ``bf16_step_s``, None when not measured), the CPU capability
        and a ``reason`` in words (printed by the trainer, kept in the model card).

    Raises:
        ValueError: ``mode`` not one of :data:`CPU_BF16_MODES`.
    """
    import torch

    if mode not in CPU_BF16_MODES:
        raise ValueError(f"cpu_bf16 must be one of {CPU_BF16_MODES}, got {mode!r}")
    capability = torch.backends.cpu.get_cpu_capability()
    record: dict[str, Any] = {"mode": mode, "cpu_capability": capability,
                              "fp32_step_s": None, "bf16_step_s": None}
    if not device.startswith("cpu"):
        return False, {**record, "used": False, "reason": f"not on CPU ({device})"}
    if mode != "auto":
        used = mode == "on"
        return used, {**record, "used": used, "reason": f"bfloat16 autocast {mode} as given"}
    if "AVX512" not in capability:
        return False, {**record, "used": False, "reason": f"float32: the CPU reports {capability}, "
                       "no AVX-512 (bfloat16 would be emulated)"}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, patch_size, patch_size, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, n_classes, (batch_size, patch_size, patch_size), generator=g)
    probe = copy.deepcopy(model).train()
    fp32, bf16 = _fastest_steps(probe, x, y)
    used = fp32 >= MIN_BF16_SPEEDUP * bf16
    reason = (f"{'bfloat16 autocast' if used else 'float32'}: a step takes {fp32:.2f} s in "
              f"float32 and {bf16:.2f} s in bfloat16 (fastest of {MEASURED_STEPS} each; "
              f"{fp32 / bf16:.2f} x; bfloat16 is taken from {MIN_BF16_SPEEDUP} x)")
    return used, {**record, "used": used, "fp32_step_s": round(fp32, 3),
                  "bf16_step_s": round(bf16, 3), "reason": reason}


def inference_bf16_agreement(package_dir, images: list, names: list[str] | None = None, *,
                             threads: int = 0, reference: list | None = None) -> dict[str, Any]:
    """Whether the package in ``package_dir`` may be served in bfloat16 on CPU, and with how
    many leading convolutions in float32: the labels of each image through the OpenVINO
    runtime in bfloat16 against eager PyTorch float32 (the reference), both through the tiled
    production path at the package's geometry and test-time augmentation
    (:meth:`worker.engine.segmenter.Segmenter.segment_array`), for each rung of
    :data:`F32_CONVS_LADDER` in turn (raised to a count the graph allows) until one keeps
    :data:`MIN_BF16_AGREEMENT_PCT` % on every image.

    Args:
        package_dir: A written model package.
        images: (H, W, 3) uint8 images, normally the validation split.
        names: Their names, for the record (default ``image 0``, ``image 1``, ...).
        threads: Intra-op threads of both (0: the libraries' defaults).
        reference: The images' eager float32 label maps ((H, W) uint8, in order) where the
            caller has them already (``pelletseg train``'s final evaluation); None: labelled
            here.

    Returns:
        ``{"measured", "cpu_precision", "cpu_f32_convs", "reason", "threshold_pct"}`` and,
        when measured, ``"tries"`` (``[{"cpu_f32_convs", "min_pct", "pooled_pct"}]``, every
        rung measured) and, of the rung taken (else the last one measured), ``"min_pct"``,
        ``"pooled_pct"`` (% of equal pixels: the worst image, all pixels) and ``"images"``
        (``[{"name", "pixels", "equal_pct"}]``). ``cpu_precision`` is ``bf16`` only when
        every image keeps >= :data:`MIN_BF16_AGREEMENT_PCT` %; nothing is measured (``f32``)
        without images or on a CPU without bfloat16 units
        (:func:`worker.engine.runtimes.cpu_has_bf16`; OpenVINO not installed counts as none).

    Raises:
        ModelPackageError: the package is invalid or its weights fail their sha256.
        ExportError: the graph could not be exported for OpenVINO.
    """
    from worker.engine.runtimes import cpu_has_bf16
    from worker.engine.segmenter import Segmenter

    record: dict[str, Any] = {"measured": False, "cpu_precision": "f32", "cpu_f32_convs": 0,
                              "threshold_pct": MIN_BF16_AGREEMENT_PCT}
    if not images:
        return {**record, "reason": "float32: no validation images to compare labels on"}
    if not cpu_has_bf16():
        return {**record, "reason": "float32: not measured, this CPU has no bfloat16 units "
                "(or OpenVINO is not installed); measure on one that has"}
    names = names or [f"image {i}" for i in range(len(images))]
    if reference is None:
        eager = Segmenter(package_dir, device="cpu", threads=threads, precision="fp32")
        reference = [eager.segment_array(image, eager.package.geometry) for image in images]
    tries: list[dict[str, Any]] = []
    bf16 = Segmenter(package_dir, device="cpu", threads=threads, runtime="openvino",
                     cpu_precision="bf16", cpu_f32_convs=0)
    cuts = bf16.runtime.float32_cuts()
    rungs = dict.fromkeys(r if r == 0 else next((c for c in cuts if c >= r), None)
                          for r in F32_CONVS_LADDER)
    for convs in rungs:
        if convs is None:  # past the graph's convolutions
            break
        if convs:
            bf16 = Segmenter(package_dir, device="cpu", threads=threads, runtime="openvino",
                             cpu_precision="bf16", cpu_f32_convs=convs)
        rung = _agreement(bf16, images, names, reference)
        tries.append({"cpu_f32_convs": convs, "min_pct": round(rung["min_pct"], 4),
                      "pooled_pct": rung["pooled_pct"]})
        if rung["min_pct"] >= MIN_BF16_AGREEMENT_PCT:
            break
    ok = rung["min_pct"] >= MIN_BF16_AGREEMENT_PCT
    kept = "" if not convs else f" with its first {convs} convolutions in float32"
    tried = ", ".join(f"{t['min_pct']:.3f} % with {t['cpu_f32_convs']}" for t in tries)
    reason = (f"bfloat16{kept} on CPUs with bfloat16 units: OpenVINO's labels equal float32's "
              f"on {rung['min_pct']:.3f} % of the pixels of the worst of {len(images)} images "
              f"(bfloat16 from {MIN_BF16_AGREEMENT_PCT} %; leading float32 convolutions tried: "
              f"{tried})" if ok else
              f"float32: OpenVINO's bfloat16 labels fall below {MIN_BF16_AGREEMENT_PCT} % of "
              f"float32's on the worst of {len(images)} images with every number of leading "
              f"float32 convolutions tried ({tried})")
    return {**record, "measured": True, "cpu_precision": "bf16" if ok else "f32",
            "cpu_f32_convs": convs if ok else 0, **rung, "min_pct": round(rung["min_pct"], 4),
            "tries": tries, "reason": reason}


def _agreement(segmenter, images: list, names: list[str], reference: list) -> dict[str, Any]:
    """``{"min_pct", "pooled_pct", "images"}``: the % of each image's pixels whose labels
    through ``segmenter`` equal ``reference`` (rounded to 4 decimals; the minimum unrounded
    for the threshold)."""
    import numpy as np

    geometry = segmenter.package.geometry
    rows, equal, total = [], 0, 0
    for name, image, a in zip(names, images, reference, strict=True):
        b = segmenter.segment_array(image, geometry)
        same = int(np.count_nonzero(a == b))
        equal, total = equal + same, total + a.size
        rows.append({"name": name, "pixels": int(a.size), "equal_pct": 100 * same / a.size})
    worst = min(r["equal_pct"] for r in rows)
    for r in rows:
        r["equal_pct"] = round(r["equal_pct"], 4)
    return {"min_pct": worst, "pooled_pct": round(100 * equal / total, 4), "images": rows}
