"""Model packages: ``model.json`` (metadata) + ``weights.safetensors`` (no pickle, ever).

This module reads and checks a package without torch; building the network and loading the
weights is :mod:`worker.engine.network`'s.

A package lives in a folder locally and under ``models/{name}/{version}/`` in the blob store.
``model.json`` records the architecture (segmentation-models-pytorch arch + encoder), classes
with their colours and label values, input normalisation, the tile geometry it was made for,
its training data and metrics, and the sha256 of the weights file, checked on every load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.geometry import WithGeometry

__all__ = ["MODEL_JSON", "ROLES", "TTA_KINDS", "WEIGHTS_FILE", "ClassInfo", "ModelDomain", "ModelPackage",
           "ModelPackageError", "Normalisation", "read_package", "role_and_pellet", "sha256_file"]



class ModelPackageError(Exception):
    """A model package is missing, malformed, or its weights do not match their sha256."""


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
            those are left out of ``percent_of_pellet``. Follows ``role`` when left out.
        role: ``mount`` (epoxy, background: outside the pellet, or open porosity inside its
            outline), ``pore`` (closed porosity) or ``phase`` (a solid phase); default
            ``phase``, or ``mount`` when only ``pellet: false`` is given (older packages).

    Raises (on construction):
        pydantic.ValidationError: an unknown role, or ``pellet`` contradicting ``role``
            (``pellet: true`` with role ``mount``, ``pellet: false`` with another role).
    """

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, le=255)
    name: str
    rgb: tuple[int, int, int]
    label_value: int = Field(ge=0, le=255)
    pellet: bool = True
    role: Literal["mount", "pore", "phase"] = "phase"

    @model_validator(mode="before")
    @classmethod
    def _role_and_pellet(cls, data: Any) -> Any:
        return role_and_pellet(data)


ROLES = ("mount", "pore", "phase")
#: Test-time augmentation kinds of ``ModelPackage.tta``.
TTA_KINDS = ("none", "flips")


def role_and_pellet(data: Any) -> Any:
    """Fill in a class entry's ``role`` and ``pellet`` from each other (a pydantic
    ``mode="before"`` helper, shared with ``dataset.yaml`` classes).

    ``role`` left out or null: ``mount`` if ``pellet`` is false, else ``phase``; ``pellet``
    left out: true unless the role is ``mount``.

    Raises:
        ValueError: ``pellet`` given and contradicting ``role``.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if data.get("role") is None:
        data["role"] = "phase" if data.get("pellet", True) else "mount"
    if data.get("pellet") is None:
        data["pellet"] = data["role"] != "mount"
    elif bool(data["pellet"]) != (data["role"] != "mount"):
        raise ValueError(
            f"class {data.get('name')!r}: pellet={data['pellet']} contradicts "
            f"role={data['role']!r}; only role 'mount' is outside the pellet"
        )
    return data


class Normalisation(BaseModel):
    """Per-channel input normalisation applied to RGB values scaled to [0, 1]."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ModelDomain(BaseModel):
    """What a model was trained on, so that users know which images its labels mean
    something for (``pelletseg run`` and ``pelletseg models`` print it).

    Attributes:
        kind: ``pellet`` (polished iron-ore pellet sections), ``demo`` (the bundled model that
            makes pelletseg run end to end, not a pellet model) or ``other``.
        images: The training images in words (modality, material, size, bit depth).
        dataset: Name of the training dataset (``datasets/{dataset}/dataset.yaml``), if any.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pellet", "demo", "other"]
    images: str
    dataset: str | None = None


class ModelPackage(WithGeometry):
    """Contents of ``model.json``.

    ``tile_size`` and ``halo`` (px, :attr:`geometry`) are the tile geometry the package was
    trained and evaluated at; jobs that name no geometry are served at it (unless the
    operator sets ``PELLETSEG_TILE_SIZE``/``PELLETSEG_HALO``).

    ``tta`` is the test-time augmentation the package is served with: ``none``, or ``flips``
    (the logits of each tile averaged over the tile and its horizontal, vertical and double
    flips: four forward passes per tile; :meth:`worker.engine.segmenter.Segmenter.forward`).

    ``input_scale`` is the model's pixels per image pixel: at 0.5 each tile (halo included) is
    reduced to half its side by area averaging before the forward pass and the logits are
    interpolated back to the tile before the argmax
    (:meth:`worker.engine.segmenter.Segmenter.forward`); the package was trained on images
    reduced the same way (``pelletseg train --input-scale``). The tile geometry stays in
    image px; ``tile_size * input_scale`` must be a multiple of 32.

    ``cpu_precision`` is the inference precision the package may be served at by the OpenVINO
    runtime on a CPU with bfloat16 units (AMX or AVX-512 BF16): ``f32`` (default) or
    ``bf16``, about 2x faster there (docs/performance.md). ``pelletseg train`` sets ``bf16``
    only where the package's bfloat16 labels equal its float32 labels on >= 99.9 % of the
    pixels of every validation image (:func:`training.precision.inference_bf16_agreement`,
    recorded in ``metrics["cpu_bf16_agreement"]``); CPUs without bfloat16 units, and workers
    with ``PELLETSEG_PRECISION=fp32``, serve every package in float32
    (:func:`worker.engine.runtimes.make_runtime`). ``cpu_f32_convs`` (default 0) is how many
    of the network's leading convolutions (and everything before them) keep float32 when it
    is served in bfloat16: the first layers see the pixels' full 8 bits, which bfloat16
    rounds, and they flip most of the labels that bfloat16 flips (the bundled model: 99.74 %
    of its float32 labels on LumenStone with 0, 99.933 % with 9; docs/performance.md,
    "Mixed precision"). ``pelletseg train`` sets the smallest value of
    :data:`training.precision.F32_CONVS_LADDER` that keeps 99.9 %.

    ``edge_pad`` (px, 0..halo) is how much mirrored image a tile may show past the image's
    edge (:mod:`worker.engine.tiling`); None (default): the halo. Measured on a LumenStone
    package, 0 to 512 px moved val mIoU within +-0.006 with no trend (docs/models.md, run 39),
    so ``pelletseg train`` sets none; ``pelletseg evaluate --edge-pad`` measures others.

    ``members`` is the number of networks of the architecture the package holds (a deep
    ensemble: their softmax probabilities are averaged, :mod:`worker.engine.ensemble`; the
    weights' keys are then ``members.<k>.<name>``); each member costs one forward pass, so a
    package of K members serves K times slower per image px. Default 1.

    Raises (on construction):
        pydantic.ValidationError: missing fields, class indices that are not 0..C-1, a
            tile geometry that breaks :class:`core.geometry.TileGeometry`'s rule, an
            ``input_scale`` outside (0, 1], an ``edge_pad`` over the halo, or a negative
            ``cpu_f32_convs``.
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
    um_per_px: float | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    domain: ModelDomain | None = None  # what it was trained on; None: not declared
    tta: Literal["none", "flips"] = "none"
    input_scale: float = Field(1.0, gt=0, le=1)
    cpu_precision: Literal["f32", "bf16"] = "f32"
    cpu_f32_convs: int = Field(0, ge=0)
    members: int = Field(1, ge=1, le=8)
    edge_pad: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _edge_pad_within_halo(self):
        if self.edge_pad is not None and self.edge_pad > self.halo:
            raise ValueError(f"edge_pad {self.edge_pad} px is over the halo ({self.halo} px)")
        return self

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
