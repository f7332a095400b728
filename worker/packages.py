"""Model packages: ``model.json`` (metadata) + ``weights.safetensors`` (no pickle, ever).

A package lives in a folder locally and under ``models/{name}/{version}/`` in the blob store.
``model.json`` records the architecture (segmentation-models-pytorch arch + encoder), classes
with their colours and label values, input normalisation, the tile geometry it was made for,
its training data and metrics, and the sha256 of the weights file, checked on every load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.errors import ModelPackageError

MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.safetensors"


class ClassInfo(BaseModel):
    """One output class of a model.

    Attributes:
        index: Channel index in the model output = value in the label map (uint8).
        name: Phase name (e.g. ``magnetite``).
        rgb: Display colour, RGB order (0-255).
        label_value: Value of this class in the training masks (may be sparse, e.g. 0,1,3,5,7).
        pellet: False for phases that are not part of the pellet (epoxy, mounting background);
            those are left out of ``percent_of_pellet``.
    """

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, le=255)
    name: str
    rgb: tuple[int, int, int]
    label_value: int = Field(ge=0, le=255)
    pellet: bool = True


class Normalisation(BaseModel):
    """Per-channel input normalisation applied to RGB values scaled to [0, 1]."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ModelPackage(BaseModel):
    """Contents of ``model.json``.

    Raises (on construction):
        pydantic.ValidationError: missing fields, or class indices that are not 0..C-1.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$")
    architecture: str = "Unet"
    encoder: str = "resnet34"
    arch_params: dict[str, Any] = Field(default_factory=dict)
    in_channels: int = 3
    classes: list[ClassInfo]
    normalisation: Normalisation = Field(default_factory=Normalisation)
    tile_size: int = 512
    halo: int = 64
    um_per_px: float | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("classes")
    @classmethod
    def _indices_dense(cls, v: list[ClassInfo]) -> list[ClassInfo]:
        if [c.index for c in v] != list(range(len(v))):
            raise ValueError("class indices must be 0..C-1 in order")
        if len({c.label_value for c in v}) != len(v):
            raise ValueError("class label_values must be unique")
        return v

    @property
    def n_classes(self) -> int:
        """Number of output classes C."""
        return len(self.classes)

    def palette(self) -> list[tuple[int, int, int]]:
        """RGB colour of each class index, for overlays."""
        return [c.rgb for c in self.classes]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_package(folder: str | Path, *, verify: bool = True) -> ModelPackage:
    """Read and validate ``model.json`` in ``folder``; check the weights' sha256.

    Raises:
        ModelPackageError: model.json or the weights file is missing or invalid, or the
            weights' sha256 differs from ``weights_sha256`` (corrupt or tampered package).
    """
    folder = Path(folder)
    meta_path = folder / MODEL_JSON
    try:
        pkg = ModelPackage.model_validate(json.loads(meta_path.read_text()))
    except FileNotFoundError as e:
        raise ModelPackageError(f"{meta_path} does not exist: not a model package") from e
    except (json.JSONDecodeError, ValidationError) as e:
        raise ModelPackageError(f"{meta_path} is not a valid model.json: {e}") from e
    if verify:
        weights = folder / WEIGHTS_FILE
        if not weights.exists():
            raise ModelPackageError(f"{weights} is missing from model package {folder}")
        actual = sha256_file(weights)
        if actual != pkg.weights_sha256:
            raise ModelPackageError(
                f"{weights}: sha256 {actual[:16]}... does not match model.json's "
                f"{pkg.weights_sha256[:16]}...; the package is corrupt or was altered: "
                "re-publish it"
            )
    return pkg


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
