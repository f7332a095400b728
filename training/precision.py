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
LumenStone images (docs/performance.md), so a package is marked for bfloat16
(``ModelPackage.cpu_precision``) only where its own validation images keep
:data:`MIN_BF16_AGREEMENT_PCT` % each.
"""

from __future__ import annotations

import copy
import time
from typing import Any

__all__ = ["CPU_BF16_MODES", "MEASURED_STEPS", "MIN_BF16_AGREEMENT_PCT", "MIN_BF16_SPEEDUP",
           "choose_cpu_bf16", "inference_bf16_agreement"]

#: ``cpu_bf16`` values: measure and decide, always, never.
CPU_BF16_MODES = ("auto", "on", "off")
#: The measured float32 / bfloat16 step-time ratio at which ``auto`` takes bfloat16.
MIN_BF16_SPEEDUP = 1.2
#: Timed steps of each precision (after one warm-up each), alternated; the fastest counts.
MEASURED_STEPS = 3
#: % of the pixels of every validation image whose bfloat16 labels must equal the float32
#: ones for a package to be served in bfloat16 (issue 17's rule for any runtime).
MIN_BF16_AGREEMENT_PCT = 99.9


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
    """Whether the package in ``package_dir`` may be served in bfloat16 on CPU: the labels of
    each image through the OpenVINO runtime in bfloat16 against eager PyTorch float32 (the
    reference), both through the tiled production path at the package's geometry and
    test-time augmentation (:meth:`worker.engine.segmenter.Segmenter.segment_array`).

    Args:
        package_dir: A written model package.
        images: (H, W, 3) uint8 images, normally the validation split.
        names: Their names, for the record (default ``image 0``, ``image 1``, ...).
        threads: Intra-op threads of both (0: the libraries' defaults).
        reference: The images' eager float32 label maps ((H, W) uint8, in order) where the
            caller has them already (``pelletseg train``'s final evaluation); None: labelled
            here.

    Returns:
        ``{"measured", "cpu_precision", "reason", "threshold_pct"}`` and, when measured,
        ``"min_pct"``, ``"pooled_pct"`` (% of equal pixels: the worst image, all pixels) and
        ``"images"`` (``[{"name", "pixels", "equal_pct"}]``). ``cpu_precision`` is ``bf16``
        only when every image keeps >= :data:`MIN_BF16_AGREEMENT_PCT` %; nothing is
        measured (``f32``) without images or on a CPU without bfloat16 units
        (:func:`worker.engine.runtimes.cpu_has_bf16`; OpenVINO not installed counts as none).

    Raises:
        ModelPackageError: the package is invalid or its weights fail their sha256.
        ExportError: the graph could not be exported for OpenVINO.
    """
    import numpy as np

    from worker.engine.runtimes import cpu_has_bf16
    from worker.engine.segmenter import Segmenter

    record: dict[str, Any] = {"measured": False, "cpu_precision": "f32",
                              "threshold_pct": MIN_BF16_AGREEMENT_PCT}
    if not images:
        return {**record, "reason": "float32: no validation images to compare labels on"}
    if not cpu_has_bf16():
        return {**record, "reason": "float32: not measured, this CPU has no bfloat16 units "
                "(or OpenVINO is not installed); measure on one that has"}
    names = names or [f"image {i}" for i in range(len(images))]
    bf16 = Segmenter(package_dir, device="cpu", threads=threads, runtime="openvino",
                     cpu_precision="bf16")
    geometry = bf16.package.geometry
    if reference is None:
        eager = Segmenter(package_dir, device="cpu", threads=threads, precision="fp32")
        reference = [eager.segment_array(image, geometry) for image in images]
    rows, equal, total = [], 0, 0
    for name, image, a in zip(names, images, reference, strict=True):
        b = bf16.segment_array(image, geometry)
        same = int(np.count_nonzero(a == b))
        equal, total = equal + same, total + a.size
        rows.append({"name": name, "pixels": int(a.size), "equal_pct": 100 * same / a.size})
    worst = min(r["equal_pct"] for r in rows)
    ok = worst >= MIN_BF16_AGREEMENT_PCT
    for r in rows:
        r["equal_pct"] = round(r["equal_pct"], 4)
    reason = (f"{'bfloat16' if ok else 'float32'} on CPUs with bfloat16 units: OpenVINO's "
              f"bfloat16 labels equal float32's on {worst:.3f} % of the pixels of the worst of "
              f"{len(rows)} images (bfloat16 from {MIN_BF16_AGREEMENT_PCT} %)")
    return {**record, "measured": True, "cpu_precision": "bf16" if ok else "f32",
            "min_pct": round(worst, 4), "pooled_pct": round(100 * equal / total, 4), "images": rows,
            "reason": reason}
