"""What ``pelletseg run`` says about its model: name, version, architecture, classes, and
what the model was trained on (the package's ``domain``, and its pixel sizes). The warning
for the bundled demo model given an image that is not one of its kind is
:func:`models.suitability.demo_model_warning`'s.
"""

from __future__ import annotations

from pathlib import Path

from core.inference import PRECISION_NAMES
from models import MODEL_JSON, MODEL_ZOO, ModelPackage, ModelPackageError, read_package
from models.suitability import trained_pixel_sizes

__all__ = ["cpu_serving", "describe", "trained_at", "trained_on", "with_bundled_domain"]


def with_bundled_domain(pkg: ModelPackage, zoo: Path = MODEL_ZOO) -> ModelPackage:
    """``pkg``, with the domain of the bundled package of the same name, version and weights
    when its own ``model.json`` declares none (a store published before ``domain`` existed:
    the blob store keeps the first ``model.json`` it was given)."""
    if pkg.domain is not None:
        return pkg
    folder = zoo / pkg.name / pkg.version
    if not (folder / MODEL_JSON).is_file():
        return pkg
    try:
        bundled = read_package(folder, verify=False)
    except ModelPackageError:
        return pkg
    if bundled.weights_sha256 != pkg.weights_sha256 or bundled.domain is None:
        return pkg
    return pkg.model_copy(update={"domain": bundled.domain})


def trained_on(pkg: ModelPackage) -> str:
    """What ``pkg`` was trained on, in words: its declared domain, else the dataset named in
    its training record, else ``not declared``."""
    if pkg.domain is not None:
        dataset = f"; dataset {pkg.domain.dataset}" if pkg.domain.dataset else ""
        return f"{pkg.domain.images} ({pkg.domain.kind} model{dataset})"
    dataset = (pkg.training or {}).get("dataset")
    if dataset:
        return f"dataset {dataset} (kind of images not declared in model.json)"
    return "not declared in model.json"


def cpu_serving(pkg: ModelPackage) -> str:
    """The precision a CPU worker serves ``pkg`` at (``model.json`` ``cpu_precision``):
    ``"CPU: float32"`` or ``"CPU: bfloat16, first N convolutions float32 (where the CPU has
    bfloat16 units)"``; a worker's ``PELLETSEG_PRECISION=fp32`` or a job's ``precision: fp32``
    keeps float32 anyway."""
    name = PRECISION_NAMES[pkg.cpu_precision]
    if pkg.cpu_precision != "bf16":
        return f"CPU: {name}"
    convs = f", first {pkg.cpu_f32_convs} convolutions float32" if pkg.cpu_f32_convs else ""
    return f"CPU: {name}{convs} (where the CPU has bfloat16 units)"


def describe(pkg: ModelPackage) -> list[str]:
    """Lines that say which model runs and what it was trained on (and at which pixel sizes,
    :func:`models.suitability.trained_pixel_sizes`, where the package records them)."""
    classes = ", ".join(c.name for c in pkg.classes)
    return [f"model {pkg.name} {pkg.version} ({pkg.architecture}/{pkg.encoder}; "
            f"{pkg.n_classes} classes: {classes})",
            f"  trained on {trained_on(pkg)}{trained_at(pkg)}"]


def trained_at(pkg: ModelPackage) -> str:
    """``", at 0.5 µm/px"`` (``" zoomed to 0.125-2 µm/px"`` added where it was trained with a
    random zoom: :func:`models.suitability.trained_pixel_sizes`), or ``""`` where the package
    records no pixel size."""
    sizes = trained_pixel_sizes(pkg)
    if sizes is None:
        return ""
    zoom = "" if sizes[0] == sizes[1] else f" zoomed to {sizes[0]:.3g}-{sizes[1]:.3g} µm/px"
    return f", at {pkg.um_per_px:g} µm/px{zoom}"
