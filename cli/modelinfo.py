"""What ``pelletseg run`` says about its model: name, version, architecture, classes, and
what the model was trained on (the package's ``domain``); and a warning when the bundled
demo model (``domain.kind == "demo"``) is asked to segment an image that is not one of the
demo's, whose labels would then mean little.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from core.inference import PRECISION_NAMES
from models import MODEL_JSON, MODEL_ZOO, ModelPackage, ModelPackageError, read_package
from models.scale import trained_pixel_sizes

__all__ = ["cpu_serving", "demo_warning", "describe", "is_demo_image", "trained_on",
           "with_bundled_domain"]


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
    :func:`models.scale.trained_pixel_sizes`, where the package records them)."""
    classes = ", ".join(c.name for c in pkg.classes)
    sizes = trained_pixel_sizes(pkg)
    at = ("" if sizes is None else f", at {pkg.um_per_px:g} µm/px" if sizes[0] == sizes[1]
          else f", at {pkg.um_per_px:g} µm/px zoomed to {sizes[0]:.3g}-{sizes[1]:.3g} µm/px")
    return [f"model {pkg.name} {pkg.version} ({pkg.architecture}/{pkg.encoder}; "
            f"{pkg.n_classes} classes: {classes})",
            f"  trained on {trained_on(pkg)}{at}"]


def _path_of(source: str) -> Path | None:
    """The local path of a ``file://`` URL or a plain path; None for other URLs."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if "://" in source:
        return None
    return Path(source)


def is_demo_image(source: str, demo_folders: list[Path]) -> bool:
    """True when ``source`` (a path or URL) lies in one of ``demo_folders`` (the demo mosaics
    in ``{home}/demo``, the shipped samples in ``imaging/samples``) or in a ``nasa-ebc``
    dataset folder: images of the kind the demo model was trained on."""
    path = _path_of(source)
    if path is None:
        return False
    path = path.expanduser().resolve()
    if "nasa-ebc" in path.parts:
        return True
    for folder in demo_folders:
        try:
            path.relative_to(Path(folder).expanduser().resolve())
            return True
        except ValueError:
            continue
    return False


def demo_warning(pkg: ModelPackage, source: str, demo_folders: list[Path],
                 labels: dict | None = None) -> str | None:
    """A warning when the demo model segments an image that is not a demo image (the
    ``demo`` label marks ``pelletseg demo``'s own jobs), else None."""
    if pkg.domain is None or pkg.domain.kind != "demo":
        return None
    if (labels or {}).get("demo") or is_demo_image(source, demo_folders):
        return None
    return (f"warning: {pkg.name} is the bundled demo model, trained on {pkg.domain.images}; "
            "it is not a pellet model, and its labels on this image mean little. Train one on "
            "your own labelled images (`pelletseg train DATASET_YAML --epochs N --out DIR "
            "--name NAME` registers it) and run it with `pelletseg run --model NAME`.")
