"""The network of a model package, in torch: build the segmentation-models-pytorch model a
``model.json`` describes, load its safetensors weights, and write a package from a trained
model (:func:`write_package`, used by training). Never downloads weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.package import (
    MODEL_JSON,
    WEIGHTS_FILE,
    ModelPackage,
    ModelPackageError,
    sha256_file,
)

__all__ = ["build_model", "load_weights", "write_package"]


def build_model(pkg: ModelPackage):
    """Build the (randomly initialised) segmentation-models-pytorch network of a package.

    Never downloads weights (``encoder_weights=None``).

    Returns:
        torch.nn.Module mapping (N, in_channels, H, W) float32 to (N, C, H, W) logits.

    Raises:
        ModelPackageError: unknown architecture or encoder.
    """
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(
            pkg.architecture,
            encoder_name=pkg.encoder,
            encoder_weights=None,
            in_channels=pkg.in_channels,
            classes=pkg.n_classes,
            **pkg.arch_params,
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ModelPackageError(
            f"model {pkg.name} {pkg.version}: cannot build {pkg.architecture}/{pkg.encoder}: {e}"
        ) from e


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
