"""Bench inputs: the model package and the images (mosaics of the real micrographs shipped in
``imaging/samples``, written as tiled JPEG BigTIFFs like a scanner's output), built once into
the work folder and reused by later runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.geometry import DEFAULT_GEOMETRY
from models.package import ModelPackage, read_package

BUNDLED = "ebc-unet-mnv2"
REFERENCE = "unet-resnet34"
#: The pellet class scheme (8 phases); only its size matters to a random-init network.
PELLET_CLASSES = [
    ("pore", (0, 0, 0)), ("epoxy", (128, 128, 128)), ("hematite", (255, 0, 0)),
    ("magnetite", (0, 0, 255)), ("wustite", (255, 85, 255)), ("iron", (0, 255, 255)),
    ("slag", (0, 160, 0)), ("olivine", (255, 255, 0)),
]


def model_package(model: str, work_dir: Path) -> Path:
    """Folder of the bench's model package.

    ``ebc-unet-mnv2``: the bundled package. ``unet-resnet34``: the issue's reference network
    (segmentation-models-pytorch Unet, ResNet-34 encoder, 8 classes, ``encoder_weights=None``,
    random init with seed 0), written once under ``work_dir/models``. Anything else: a
    package folder.

    Raises:
        ModelPackageError: the folder is not a valid package.
    """
    from models.registry import MODEL_ZOO

    if model == BUNDLED:
        return MODEL_ZOO / BUNDLED / "1"
    if model == REFERENCE:
        folder = work_dir / "models" / f"bench-{REFERENCE}" / "1"
        if not (folder / "model.json").exists():
            _write_reference(folder)
        return folder
    read_package(model)
    return Path(model)


def _write_reference(folder: Path) -> None:
    import segmentation_models_pytorch as smp
    import torch

    from worker.engine.network import write_package

    torch.manual_seed(0)
    net = smp.create_model("Unet", encoder_name="resnet34", encoder_weights=None,
                           in_channels=3, classes=len(PELLET_CLASSES))
    classes = [{"index": i, "name": n, "rgb": rgb, "label_value": i}
               for i, (n, rgb) in enumerate(PELLET_CLASSES)]
    write_package(folder, net, {
        "name": f"bench-{REFERENCE}", "version": "1", "architecture": "Unet", "encoder": "resnet34",
        "classes": classes, **DEFAULT_GEOMETRY.as_dict(),
        "training": {"note": "random initialisation (seed 0): for speed benchmarks only"},
    })


def describe_model(folder: Path) -> dict:
    """Name, architecture and size of a package, for the report."""
    import torch  # noqa: F401 - build_model needs it loaded

    from worker.engine.network import build_model

    pkg: ModelPackage = read_package(folder)
    params = sum(p.numel() for p in build_model(pkg).parameters())
    trained = "random" not in str(pkg.training.get("note", ""))
    return {
        "name": pkg.name, "version": pkg.version, "architecture": pkg.architecture,
        "encoder": pkg.encoder, "classes": pkg.n_classes, "parameters_m": round(params / 1e6, 2),
        "weights": "trained" if trained else "random init (encoder_weights=None, seed 0)",
    }


def mosaic(work_dir: Path, side: int) -> Path:
    """A ``side x side`` px mosaic of real micrographs (:func:`imaging.mosaic.build_mosaic`, seed
    0, JPEG Q 90 tiled BigTIFF), built once under ``work_dir/images``."""
    from imaging.mosaic import build_mosaic, demo_sources

    path = work_dir / "images" / f"mosaic-{side}px.tif"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part.tif")
        w, h = build_mosaic(demo_sources(), side * side / 1e6, tmp)
        if (w, h) != (side, side):
            raise RuntimeError(f"mosaic came out {w} x {h} px, wanted {side} x {side} px")
        os.replace(tmp, path)
    return path


def crop_image(source: Path, out: Path, width: int, height: int) -> Path:
    """The top-left ``width x height`` px of ``source`` as a tiled JPEG BigTIFF (built once)."""
    import pyvips

    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        image = pyvips.Image.new_from_file(str(source))
        tmp = out.with_name(out.name + ".part.tif")
        image.crop(0, 0, min(width, image.width), min(height, image.height)).tiffsave(
            str(tmp), tile=True, tile_width=256, tile_height=256, compression="jpeg", Q=90,
            bigtiff=True)
        os.replace(tmp, out)
    return out


def decode(path: Path) -> np.ndarray:
    """The whole image as (H, W, 3) uint8 (for the in-memory peers)."""
    from imaging.reading import open_image, read_rows

    image = open_image(path, max_pixels=10**10)
    return read_rows(image, 0, image.height)
