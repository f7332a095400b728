"""Datasets described by ``dataset.yaml``: image + label-map pairs, a class table mapping mask
values (sparse codes allowed) to class indices, and optional splits. Unknown mask values are
reported with their pixel counts, never silently mapped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.errors import WorkerError

DEFAULT_PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                   (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)]


class DatasetError(WorkerError):
    """A dataset description or one of its images/masks is invalid; the message names the file."""


class ClassSpec(BaseModel):
    """One class of a dataset: its name, its value in the mask files, its display colour."""

    model_config = ConfigDict(extra="forbid")
    name: str
    value: int = Field(ge=0, le=255)
    rgb: tuple[int, int, int] | None = None
    pellet: bool = True


class SplitsFile(BaseModel):
    """Splits read from a json file: ``{key: {split: [file names or stems]}}`` (or no key)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    key: str | None = None


class DatasetSpec(BaseModel):
    """Contents of ``dataset.yaml``; ``images``, ``masks`` and ``splits.file`` are relative to
    the yaml's folder (``root``). ``masks`` contains ``{stem}``, the image name without suffix.
    Without ``splits`` every image is in ``train``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    images: str
    masks: str
    classes: list[ClassSpec] = Field(min_length=1, max_length=255)
    splits: dict[str, list[str]] | SplitsFile | None = None
    root: Path = Path(".")

    @field_validator("masks")
    @classmethod
    def _has_stem(cls, v: str) -> str:
        if "{stem}" not in v:
            raise ValueError("masks must contain '{stem}', e.g. masks/{stem}.png")
        return v

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[ClassSpec]) -> list[ClassSpec]:
        for attr in ("name", "value"):
            seen = [getattr(c, attr) for c in v]
            if len(set(seen)) != len(seen):
                raise ValueError(f"class {attr}s must be unique, got {seen}")
        return v

    def image_paths(self) -> dict[str, Path]:
        """Image files matching ``images``, by stem (sorted). Raises DatasetError if none."""
        paths = sorted(p for p in self.root.glob(self.images) if p.is_file())
        if not paths:
            raise DatasetError(f"dataset {self.name}: no image matches {self.root / self.images}")
        return {p.stem: p for p in paths}

    def mask_path(self, stem: str) -> Path:
        """Mask file of image ``stem`` (may not exist)."""
        return self.root / self.masks.format(stem=stem)

    def lut(self) -> np.ndarray:
        """(256,) uint8 map mask value -> class index; 255 marks values not in the table."""
        lut = np.full(256, 255, np.uint8)
        for i, c in enumerate(self.classes):
            lut[c.value] = i
        return lut

    def split_stems(self) -> dict[str, list[str]]:
        """Image stems of each split. Raises DatasetError for a stem without an image file."""
        images = self.image_paths()
        splits: Any = self.splits
        if splits is None:
            return {"train": list(images)}
        if isinstance(splits, SplitsFile):
            path = self.root / splits.file
            try:
                data = json.loads(path.read_text())
                splits = data[splits.key] if splits.key else data
            except (OSError, json.JSONDecodeError, KeyError) as e:
                raise DatasetError(f"{path}: cannot read splits (key {splits.key!r}): {e}") from e
            if not isinstance(splits, dict) or not all(isinstance(v, list)
                                                       for v in splits.values()):
                raise DatasetError(f"{path}: splits must map split names to lists of images")
        out = {k: [n if n in images else Path(n).stem for n in v] for k, v in splits.items()}
        for split, stems in out.items():
            missing = [s for s in stems if s not in images]
            if missing:
                raise DatasetError(f"dataset {self.name}: split {split!r} names images that do not "
                                   f"match {self.images}: {missing}")
        return out


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    """Parse and validate a ``dataset.yaml``; ``root`` is set to its folder.

    Raises:
        DatasetError: the file is missing, not YAML, or does not fit :class:`DatasetSpec`.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: expected a mapping at the top level")
        return DatasetSpec.model_validate({**data, "root": path.resolve().parent})
    except (OSError, yaml.YAMLError, ValidationError) as e:
        raise DatasetError(f"{path}: not a valid dataset description: {e}") from e


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB. Raises DatasetError if Pillow cannot read it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image: {e}") from e


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as (H, W) uint8 values (grey or palette PNG; no colour-coded masks).

    Raises:
        DatasetError: unreadable, colour (RGB) mask, or values above 255.
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                raise DatasetError(f"{path}: mask is {im.mode}; expected a single-band label "
                                   "map (grey or palette PNG) whose values are class values")
            a = np.asarray(im)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read mask: {e}") from e
    if a.ndim != 2:
        raise DatasetError(f"{path}: mask has shape {a.shape}; expected (H, W)")
    if a.dtype != np.uint8:
        if a.min() < 0 or a.max() > 255:
            raise DatasetError(f"{path}: mask values {a.min()}..{a.max()} do not fit 0..255")
        a = a.astype(np.uint8)
    return a


def mask_to_index(mask: np.ndarray, lut: np.ndarray, path: str | Path = "<mask>") -> np.ndarray:
    """Map (H, W) uint8 mask values to (H, W) uint8 class indices with ``lut`` (from
    :meth:`DatasetSpec.lut`).

    Raises:
        DatasetError: the mask holds values not in the class table; names the file, the
            values and their pixel counts.
    """
    idx = lut[mask]
    if (idx == 255).any():
        counts = np.bincount(mask[idx == 255].ravel(), minlength=256)
        bad = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
        raise DatasetError(f"{path}: mask values not in the class table "
                           f"(value: pixel count): {bad}; add them to 'classes' or fix the mask")
    return idx


def load_split(spec: DatasetSpec, stems: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read images and class-index masks of ``stems``: list of ((H, W, 3) uint8, (H, W) uint8).

    Raises:
        DatasetError: missing mask, size mismatch, or unknown mask values.
    """
    images, lut, out = spec.image_paths(), spec.lut(), []
    for stem in stems:
        mpath = spec.mask_path(stem)
        if not mpath.is_file():
            raise DatasetError(f"{mpath}: mask of image {images[stem]} does not exist")
        img, mask = read_image(images[stem]), read_mask(mpath)
        if img.shape[:2] != mask.shape:
            raise DatasetError(f"{mpath}: mask is {mask.shape[1]}x{mask.shape[0]} px but image "
                               f"{images[stem]} is {img.shape[1]}x{img.shape[0]} px")
        out.append((img, mask_to_index(mask, lut, mpath)))
    return out
