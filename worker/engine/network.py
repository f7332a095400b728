"""The network of a model package, in torch: build the segmentation-models-pytorch model a
``model.json`` describes, load its safetensors weights, and write a package from a trained
model (:func:`write_package`, used by training), and the resampling between image pixels and
the model's input scale (:func:`to_model_scale`, :func:`to_image_scale`), which serving and
training share. Never downloads weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.geometry import model_size
from models.package import (
    MODEL_JSON,
    WEIGHTS_FILE,
    ModelPackage,
    ModelPackageError,
    sha256_file,
)

__all__ = ["build_model", "load_weights", "to_image_scale", "to_model_scale",
           "write_package"]


def build_model(pkg: ModelPackage):
    """Build the (randomly initialised) segmentation-models-pytorch network of a package, or
    with ``pkg.members`` > 1 an :class:`worker.engine.ensemble.Ensemble` of that many (each
    member initialised in turn from torch's generator).

    Never downloads weights (``encoder_weights=None``).

    Returns:
        torch.nn.Module mapping (N, in_channels, H, W) float32 to (N, C, H, W) logits (an
        ensemble: the log of its members' mean softmax probability).

    Raises:
        ModelPackageError: unknown architecture or encoder.
    """
    import segmentation_models_pytorch as smp

    try:
        nets = [smp.create_model(
            pkg.architecture,
            encoder_name=pkg.encoder,
            encoder_weights=None,
            in_channels=pkg.in_channels,
            classes=pkg.n_classes,
            **pkg.arch_params,
        ) for _ in range(pkg.members)]
    except (KeyError, ValueError, TypeError) as e:
        raise ModelPackageError(
            f"model {pkg.name} {pkg.version}: cannot build {pkg.architecture}/{pkg.encoder}: {e}"
        ) from e
    if pkg.members == 1:
        return nets[0]
    from worker.engine.ensemble import Ensemble

    return Ensemble(nets)


def load_weights(model, folder: str | Path) -> None:
    """Load ``weights.safetensors`` from ``folder`` into ``model`` (strict).

    Raises:
        ModelPackageError: keys or shapes do not match the architecture.
    """
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    try:
        state = load_file(str(path))
        state = {k: v.float() for k, v in state.items()}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as e:
        raise ModelPackageError(f"{path}: weights do not fit the architecture: {e}") from e


def write_package(folder: str | Path, model, meta: dict[str, Any], *, half: bool = False) -> ModelPackage:
    """Save ``model``'s weights as safetensors and ``model.json`` into ``folder``.

    Args:
        folder: Output folder (created).
        model: torch.nn.Module whose ``state_dict`` is saved.
        meta: ModelPackage fields except ``weights_sha256`` (filled in here).
        half: Store floating-point weights as float16 (halves the size; loaded back as float32).

    Returns:
        The written package metadata.
    """
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
        for k, v in model.state_dict().items()
        if isinstance(v, torch.Tensor)
    }
    weights = folder / WEIGHTS_FILE
    save_file(state, str(weights))
    pkg = ModelPackage.model_validate({**meta, "weights_sha256": sha256_file(weights)})
    (folder / MODEL_JSON).write_text(json.dumps(pkg.model_dump(mode="json"), indent=2) + "\n")
    return pkg


def to_model_scale(x, scale: float, *, labels: bool = False):
    """Resample images to a package's ``input_scale`` (the model's pixels per image pixel).

    Images are reduced by area averaging (``torch.nn.functional.interpolate(mode="area")``:
    the mean of each 2 x 2 block at 0.5); label maps (``labels=True``) take the nearest
    pixel, so no label is invented. At ``scale == 1`` the input comes back unchanged.

    Args:
        x: (N, C, H, W) float tensor of images, or (N, 1, H, W) tensor of labels.
        scale: ``input_scale`` in (0, 1].

    Returns:
        (N, C, round(H * scale), round(W * scale)) tensor of ``x``'s dtype.
    """
    import torch.nn.functional as F

    if scale == 1:
        return x
    size = (model_size(x.shape[-2], scale), model_size(x.shape[-1], scale))
    if labels:
        return F.interpolate(x.float(), size=size, mode="nearest-exact").to(x.dtype)
    return F.interpolate(x, size=size, mode="area")


def to_image_scale(logits, size: tuple[int, int]):
    """Logits at the model's scale back to the image's (H, W) by bilinear interpolation (pixel
    centres aligned, ``align_corners=False``), before the argmax.

    Args:
        logits: (N, C, h, w) float logits.
        size: (H, W) px of the image tile.

    Returns:
        (N, C, H, W) float32 logits (``logits`` itself if already that size).
    """
    import torch.nn.functional as F

    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
