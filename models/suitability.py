"""Whether a model package suits a job's image: the pixel sizes it was trained at and the
warning for a job outside them (:func:`pixel_size_warning`), and the warning for the bundled
demo model given an image that is not one of its kind (:func:`demo_model_warning`).

A segmentation network learns phases at the size grains, pores and rims have in its training
images' pixels. An image taken with another objective or camera binning shows them larger or
smaller (a 10x objective's image where the model learned 20x: grains at half the size in px),
which the network was never shown: its labels may be wrong while the job succeeds. The model
package records its training pixel size (``model.json`` ``um_per_px``, from ``dataset.yaml``)
and the random zoom it was trained with (``training.scale_jitter`` j: patches zoomed by
1/(1 + j) to 1 + j, :mod:`training.recipe`); a job whose pixel size lies outside
``[um_per_px / ((1 + j) t), um_per_px (1 + j) t]``, t = :data:`PIXEL_SIZE_TOLERANCE`, gets a
:data:`core.job_warnings.WarningCode.PIXEL_SIZE_UNLIKE_MODEL` warning. Without both pixel sizes
there is nothing to compare and no warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.sources import local_path, source_scheme
from models.package import ModelPackage

__all__ = ["PIXEL_SIZE_TOLERANCE", "demo_model_warning", "is_demo_image", "pixel_size_warning",
           "trained_pixel_sizes"]

#: How far (a factor, either way) a job's pixel size may lie outside the pixel sizes the model
#: saw in training before it is warned of: the spread of pixel sizes one objective gives on
#: different cameras and adapters; one objective step (10x -> 20x: 2x) is beyond it.
PIXEL_SIZE_TOLERANCE = 1.5


def trained_pixel_sizes(pkg: ModelPackage) -> tuple[float, float] | None:
    """The range of pixel sizes (µm/px) ``pkg`` saw in training: its ``um_per_px`` divided and
    multiplied by 1 + its recorded ``scale_jitter`` (0 when none is recorded); None when the
    package records no ``um_per_px``."""
    if not pkg.um_per_px:
        return None
    try:
        jitter = max(0.0, float((pkg.training or {}).get("scale_jitter") or 0.0))
    except (TypeError, ValueError):
        jitter = 0.0
    return pkg.um_per_px / (1 + jitter), pkg.um_per_px * (1 + jitter)


def pixel_size_warning(pkg: ModelPackage, pixel_size_um: float | None) -> str | None:
    """Why a job at ``pixel_size_um`` (µm/px) may get wrong labels from ``pkg``, in words, or
    None: when either pixel size is unknown, or the job's lies within
    :data:`PIXEL_SIZE_TOLERANCE` of :func:`trained_pixel_sizes`.

    Example message: ``pixel size 1.000 µm/px is 2.0 x coarser than model lumen 3 was trained
    at (0.500 µm/px): grains and pores are 2.0 x smaller in px than it learned them, and its
    labels may be wrong. ...`` (says what to do: correct the pixel size, or use a model trained at this
    magnification).
    """
    trained = trained_pixel_sizes(pkg)
    if trained is None or not pixel_size_um or pixel_size_um <= 0:
        return None
    low, high = trained
    if low / PIXEL_SIZE_TOLERANCE <= pixel_size_um <= high * PIXEL_SIZE_TOLERANCE:
        return None
    nearest = low if pixel_size_um < low else high
    factor = max(pixel_size_um, nearest) / min(pixel_size_um, nearest)
    at = (f"{pkg.um_per_px:.3f} µm/px" if low == high
          else f"{pkg.um_per_px:.3f} µm/px, zoomed to {low:.3f}-{high:.3f} µm/px")
    coarser = pixel_size_um > high
    return (f"pixel size {pixel_size_um:.3f} µm/px is {factor:.1f} x "
            f"{'coarser' if coarser else 'finer'} than model {pkg.name} {pkg.version} was "
            f"trained at ({at}): grains and pores are {factor:.1f} x "
            f"{'smaller' if coarser else 'larger'} in px than it learned them, and its labels "
            "may be wrong. If the pixel size is wrong, rerun the job with the right one "
            "(--pixel-size-um; pixel_size_um in the API); otherwise segment it with a model "
            "trained at this magnification (dataset.yaml um_per_px)")


def is_demo_image(source: str, demo_folders: Sequence[Path]) -> bool:
    """True when ``source`` (a path or URL) lies in one of ``demo_folders`` (the demo mosaics
    in ``{home}/demo``, the shipped samples in ``imaging/samples``:
    :func:`imaging.mosaic.demo_folders`) or in a ``nasa-ebc`` dataset folder: images of the
    kind the demo model was trained on."""
    if source_scheme(source) != "file":
        return False
    path = local_path(source).expanduser().resolve()
    if "nasa-ebc" in path.parts:
        return True
    for folder in demo_folders:
        try:
            path.relative_to(Path(folder).expanduser().resolve())
            return True
        except ValueError:
            continue
    return False


def demo_model_warning(pkg: ModelPackage, source: str, demo_folders: Sequence[Path],
                       labels: Mapping[str, Any] | None = None) -> str | None:
    """Why the bundled demo model's labels of ``source`` mean little, in words, or None: for
    a package whose ``domain.kind`` is ``demo`` given an image that is not a demo image
    (:func:`is_demo_image`; the ``demo`` label marks ``pelletseg demo``'s own jobs)."""
    if pkg.domain is None or pkg.domain.kind != "demo":
        return None
    if (labels or {}).get("demo") or is_demo_image(source, demo_folders):
        return None
    return (f"{pkg.name} is the bundled demo model, trained on {pkg.domain.images}; it is not "
            "a pellet model, and its labels on this image mean little. Train one on your own "
            "labelled images (`pelletseg train DATASET_YAML --epochs N --out DIR --name NAME` "
            "registers it) and run it with `pelletseg run --model NAME` (model in the API)")
