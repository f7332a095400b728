"""Datasets described by ``dataset.yaml``: image + label-map pairs, a class table mapping mask
values (sparse codes allowed), RGB colours or ilastik label indices to class indices, and
optional splits. Unknown mask values or colours are reported with their pixel counts, never
silently mapped (see :mod:`training.importers`).

```yaml
name: lumenstone-s2
images: images/train/*.jpg          # glob, relative to this file, absolute or ~/...;
                                    # ** matches any depth (images/**/*.png)
masks: masks/train/{stem}.png       # {stem}: image file name without suffix; {id}: path below
                                    # the glob's fixed folders without suffix (train/01)
mask_format: values                 # values (default) | rgb | ilastik
classes:
  - {name: background, value: 0, role: mount}   # role: mount | pore | phase (default phase)
  - {name: magnetite, value: 3}
  # mask_format rgb:     - {name: pore, rgb: [170, 0, 0]}
  # mask_format ilastik: - {name: pore}          # value = ilastik label index, default i + 1
ignore: []                          # values (or [r, g, b] colours) that are not labelled
h5_dataset: exported_data           # dataset inside ilastik .h5 exports
splits: {train: [...], val: [...], test: [...]}   # ids, file names or patterns (train/*),
                                                  # or {file: splits.json, key: EBC1}
um_per_px: 0.5                      # optional pixel size (µm/px), recorded in the model card
significant_bits: 12                # optional: of 16-bit images (a 12-bit camera's), read as a
                                    # job's --significant-bits reads them; recorded likewise
```

Images are read exactly as a job's rows see them (:func:`imaging.formats.read_rgb8`: the
same bit-depth rules, significant bits and band handling, and the same refusal of a damaged
file), so a model learns from the inputs its jobs will give it.

Errors name the key and its value: ``images = /data/x/*.tif: no file matches``.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imaging.errors import DarkSourceError, ImageFormatError
from imaging.formats import read_rgb8
from models.package import role_and_pellet
from training.importers import (
    IGNORE,
    ColourDecoder,
    DatasetError,
    ValueDecoder,
    check_unique,
    read_single_band,
)

__all__ = [
    "DEFAULT_PALETTE",
    "IGNORE",
    "ClassSpec",
    "DatasetError",
    "DatasetSpec",
    "load_dataset_spec",
    "load_masks",
    "load_split",
    "mask_to_index",
    "read_image",
    "read_mask",
]

DEFAULT_PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                   (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)]
RGB = tuple[int, int, int]


class ClassSpec(BaseModel):
    """One class of a dataset.

    Attributes:
        name: Phase name.
        value: Pixel value in ``values`` masks; 1-based label index in ``ilastik`` exports
            (default: position + 1); recorded as the package's ``label_value`` (default for
            ``rgb``: the class index).
        rgb: Mask colour (RGB order) for ``rgb`` masks; display colour otherwise.
        pellet: False for phases outside the pellet (mounting epoxy, background).
        role: ``mount``, ``pore`` or ``phase`` (see :class:`models.package.ClassInfo`);
            passed through into the model package the trainer writes.
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    value: int | None = Field(None, ge=0, le=255)
    rgb: tuple[int, int, int] | None = Field(None)
    pellet: bool = True
    role: Literal["mount", "pore", "phase"] = "phase"

    @model_validator(mode="before")
    @classmethod
    def _role_and_pellet(cls, data: Any) -> Any:
        return role_and_pellet(data)

    @field_validator("rgb")
    @classmethod
    def _rgb_range(cls, v: RGB | None) -> RGB | None:
        if v is not None and not all(0 <= c <= 255 for c in v):
            raise ValueError(f"rgb components must be 0..255, got {v}")
        return v


class SplitsFile(BaseModel):
    """Splits read from a json file: ``{key: {split: [file names or stems]}}`` (or no key)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    key: str | None = None


class DatasetSpec(BaseModel):
    """Contents of ``dataset.yaml``; ``images``, ``masks`` and ``splits.file`` are relative to
    the yaml's folder (``root``). ``masks`` contains ``{stem}`` (the image's file name without
    suffix) or ``{id}`` (its path below the glob's fixed folders, without suffix, e.g.
    ``train/01``). Splits list ids, file names or glob patterns over ids (``train/*``).
    Without ``splits`` every image is in ``train``. Without ``mask_format``: ``rgb`` if every
    class has an ``rgb`` and none a ``value``, else ``values``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    images: str
    masks: str
    mask_format: Literal["values", "rgb", "ilastik"] | None = None
    classes: list[ClassSpec] = Field(min_length=1, max_length=255)
    ignore: list[int] | list[tuple[int, int, int]] = Field(default_factory=list)
    h5_dataset: str = "exported_data"
    splits: dict[str, list[str]] | SplitsFile | None = None
    um_per_px: float | None = Field(None, gt=0)
    significant_bits: int | None = Field(None, ge=8, le=16)
    root: Path = Path(".")

    def path(self, pattern: str) -> Path:
        """``pattern`` (``~`` expanded) as a path: absolute as is, else below ``root``."""
        return self.root / os.path.expanduser(pattern)

    @field_validator("masks")
    @classmethod
    def _has_stem(cls, v: str) -> str:
        if "{stem}" not in v and "{id}" not in v:
            raise ValueError("masks must contain '{stem}' or '{id}', e.g. masks/{stem}.png")
        return v

    @model_validator(mode="after")
    def _resolve_format(self) -> DatasetSpec:
        cs = self.classes
        if self.mask_format is None:
            rgb_only = all(c.rgb is not None and c.value is None for c in cs)
            self.mask_format = "rgb" if rgb_only else "values"
        check_unique([c.name for c in cs], "class names")
        if self.mask_format == "rgb":
            if any(c.rgb is None for c in cs):
                raise ValueError("mask_format rgb: every class needs its mask colour 'rgb'")
            check_unique([c.rgb for c in cs], "class colours")
            if any(not isinstance(v, (tuple, list)) for v in self.ignore):
                raise ValueError("mask_format rgb: 'ignore' lists [r, g, b] colours")
            for i, c in enumerate(cs):
                c.value = i if c.value is None else c.value
        else:
            if self.mask_format == "ilastik":
                for i, c in enumerate(cs):
                    c.value = i + 1 if c.value is None else c.value
            elif any(c.value is None for c in cs):
                raise ValueError("mask_format values: every class needs its mask 'value'")
            if any(not isinstance(v, int) for v in self.ignore):
                raise ValueError(f"mask_format {self.mask_format}: 'ignore' lists values")
            if set(self.ignore) & {c.value for c in cs}:
                raise ValueError("a value cannot be both a class and ignored")
        check_unique([c.value for c in cs], "class values")
        return self

    def decoder(self) -> ValueDecoder | ColourDecoder:
        """The importer of this dataset's label maps (see :mod:`training.importers`)."""
        if self.mask_format == "rgb":
            return ColourDecoder(tuple(tuple(c.rgb) for c in self.classes),  # type: ignore[misc]
                                 tuple(c.name for c in self.classes),
                                 tuple(tuple(v) for v in self.ignore))  # type: ignore[arg-type]
        return ValueDecoder(tuple(c.value for c in self.classes),  # type: ignore[misc]
                            tuple(self.ignore), self.h5_dataset)  # type: ignore[arg-type]

    def display_colours(self) -> list[RGB]:
        """RGB display colour of each class: its ``rgb``, else a default palette colour."""
        return [tuple(c.rgb) if c.rgb else DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)]
                for i, c in enumerate(self.classes)]

    def image_paths(self) -> dict[str, Path]:
        """Image files matching ``images``, by id (sorted): the path relative to the glob's
        fixed leading folders, without suffix (``images/*.png`` -> ``a``; ``images/*/*.jpg``
        -> ``train/01``).

        Raises:
            DatasetError: no image matches, or two files have the same id (``a.png``, ``a.jpg``).
        """
        pattern = self.path(self.images)
        parts = pattern.parts
        fixed = next((i for i, p in enumerate(parts) if any(ch in p for ch in "*?[")), len(parts))
        base = Path(*parts[:fixed]) if fixed < len(parts) else pattern.parent
        paths = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True)
                       if Path(p).is_file())
        if not paths:
            raise DatasetError(f"dataset {self.name}: images = {self.images}: no file matches "
                               f"{pattern}; check the path (relative paths start at the "
                               f"folder of dataset.yaml, {self.root})")
        out: dict[str, Path] = {}
        for p in paths:
            key = p.relative_to(base).with_suffix("").as_posix()
            if key in out:
                raise DatasetError(f"dataset {self.name}: {out[key]} and {p} have the same id "
                                   f"{key!r}; keep one image per name")
            out[key] = p
        return out

    def mask_path(self, image_id: str) -> Path:
        """Mask file of image ``image_id`` (may not exist): ``masks`` with ``{stem}`` = the
        image's file name without suffix and ``{id}`` = its id (see :meth:`image_paths`)."""
        return self.path(self.masks.format(stem=Path(image_id).name, id=image_id))

    def lut(self) -> np.ndarray:
        """(256,) uint8 map mask value -> class index; 255 marks values not in the table
        (``values``/``ilastik`` formats)."""
        lut = np.full(256, IGNORE, np.uint8)
        for i, c in enumerate(self.classes):
            lut[c.value] = i
        return lut

    def split_stems(self) -> dict[str, list[str]]:
        """Image ids of each split (see :meth:`image_paths`).

        Raises:
            DatasetError: an unreadable splits file, or an entry that matches no image.
        """
        images = self.image_paths()
        splits: Any = self.splits
        if splits is None:
            return {"train": list(images)}
        if isinstance(splits, SplitsFile):
            path = self.path(splits.file)
            try:
                data = json.loads(path.read_text())
                splits = data[splits.key] if splits.key else data
            except (OSError, json.JSONDecodeError, KeyError) as e:
                raise DatasetError(f"splits.file = {splits.file}, splits.key = {splits.key}: "
                                   f"cannot read splits from {path}: {e}") from e
            if not isinstance(splits, dict) or not all(isinstance(v, list)
                                                       for v in splits.values()):
                raise DatasetError(f"splits.file = {splits.file}: {path} must map split names "
                                   "to lists of images")
        out = {k: _resolve_ids(v, images) for k, v in splits.items()}
        for split, ids in out.items():
            missing = [s for s in ids if s not in images]
            if missing:
                raise DatasetError(f"dataset {self.name}: splits.{split} = {missing}: no image "
                                   f"with these ids matches images = {self.images}")
        return out

    def describe(self, stems: dict[str, list[str]]) -> dict[str, Any]:
        """JSON-able description of the dataset for a model package's ``training`` field."""
        described = {"name": self.name, "mask_format": self.mask_format,
                     "images": self.images, "masks": self.masks,
                     "splits": {k: len(v) for k, v in stems.items()}, "split_images": stems}
        if self.significant_bits is not None:  # its jobs want the same --significant-bits
            described["significant_bits"] = self.significant_bits
        return described


def _resolve_ids(entries: list[str], images: dict[str, Path]) -> list[str]:
    """Split entries -> image ids: an id, a file name (suffix dropped), or a glob pattern over
    ids (``train/*``) that must match at least one image."""
    out: list[str] = []
    for n in entries:
        if n in images:
            out.append(n)
        elif any(ch in n for ch in "*?["):
            hits = [k for k in images if fnmatch.fnmatchcase(k, n)]
            out.extend(hits or [n])
        else:
            out.append(str(Path(n).with_suffix("")) if Path(n).suffix else n)
    return list(dict.fromkeys(out))


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
    except ValidationError as e:
        raise DatasetError(f"{path}: not a valid dataset description:\n"
                           + _format_errors(e)) from e
    except (OSError, yaml.YAMLError) as e:
        raise DatasetError(f"{path}: not a valid dataset description: {e}") from e


def _format_errors(e: ValidationError) -> str:
    """One ``key = value: message`` line per pydantic error (``classes.2.value = 300: ...``);
    errors of the whole file (no key) as ``message``."""
    lines = []
    for err in e.errors(include_url=False):
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if key and err.get("type") != "missing":
            lines.append(f"  {key} = {err.get('input')!r}: {msg}")
        elif key:
            lines.append(f"  {key}: {msg}")
        else:
            lines.append(f"  {msg}")
    return "\n".join(lines)


#: Largest training or evaluation image read (px): they are held in memory whole.
MAX_IMAGE_PIXELS = 1 << 30


def read_image(path: str | Path, significant_bits: int | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB exactly as a job's rows would see it
    (:func:`imaging.formats.read_rgb8`: any format a job reads; 16-bit samples by their
    ``significant_bits``, see :attr:`core.spec.JobSpec.significant_bits`).

    Raises:
        DatasetError: the file cannot be read, is damaged, is larger than
            :data:`MAX_IMAGE_PIXELS`, or is a 16-bit image nothing describes that the high
            byte leaves nearly black (the message says to set ``significant_bits``).
    """
    try:
        return read_rgb8(path, max_pixels=MAX_IMAGE_PIXELS, significant_bits=significant_bits)
    except ImageFormatError as e:
        hint = (f"; for a dataset: significant_bits: {e.camera_bits} in its dataset.yaml"
                if isinstance(e, DarkSourceError) else "")
        raise DatasetError(f"{path}: cannot read image: {e}{hint}") from e


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-band label mask as (H, W) uint8 values (grey or palette PNG).

    Raises:
        DatasetError: unreadable, colour (RGB) mask, or values above 255.
    """
    a = read_single_band(path)
    if a.dtype != np.uint8:
        if a.size and a.max() > 255:
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
    values = tuple(int(v) for v in np.flatnonzero(lut != IGNORE))
    order = np.argsort([lut[v] for v in values])
    return ValueDecoder(tuple(values[i] for i in order)).decode_array(mask, path)


def _decode_masks(spec: DatasetSpec, stems: list[str],
                  problems: list[str]) -> dict[str, np.ndarray]:
    """The class-index masks of ``stems`` that exist and decode; what is wrong with the others
    is appended to ``problems`` (one line per file)."""
    images, decoder = spec.image_paths(), spec.decoder()
    masks = {}
    for stem in stems:
        mpath = spec.mask_path(stem)
        if not mpath.is_file():
            problems.append(f"masks = {spec.masks}: {mpath}, the mask of image "
                            f"{images[stem]}, does not exist")
            continue
        try:
            masks[stem] = decoder.decode(mpath)
        except DatasetError as e:
            problems.append(str(e))
    return masks


def _raise_problems(spec: DatasetSpec, stems: list[str], problems: list[str]) -> None:
    if problems:
        raise DatasetError(f"dataset {spec.name}: {len(problems)} of {len(stems)} masks are "
                           "invalid:\n" + "\n".join(problems))


def load_masks(spec: DatasetSpec, stems: list[str]) -> list[np.ndarray]:
    """Read the class-index masks of ``stems`` alone: list of (H, W) uint8 class indices
    (:data:`IGNORE` for ignored pixels), e.g. to choose an input scale before the images are
    read.

    Raises:
        DatasetError: missing masks, unknown mask values/colours (every file listed).
    """
    problems: list[str] = []
    masks = _decode_masks(spec, stems, problems)
    _raise_problems(spec, stems, problems)
    return [masks[s] for s in stems]


def load_split(spec: DatasetSpec, stems: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read images and class-index masks of ``stems``: list of ((H, W, 3) uint8 RGB,
    (H, W) uint8 class indices, :data:`IGNORE` for ignored pixels).

    Every file is checked before failing, so one error lists every bad mask.

    Raises:
        DatasetError: missing mask, size mismatch, unknown mask values/colours (each file,
            value or colour and its pixel count).
    """
    images = spec.image_paths()
    problems: list[str] = []
    masks = _decode_masks(spec, stems, problems)
    out = []
    for stem in stems:
        if stem not in masks:
            continue
        mask, img = masks[stem], read_image(images[stem], spec.significant_bits)
        if img.shape[:2] != mask.shape:
            problems.append(f"{spec.mask_path(stem)}: mask is {mask.shape[1]}x{mask.shape[0]} "
                            f"px but image {images[stem]} is {img.shape[1]}x{img.shape[0]} px")
            continue
        out.append((img, mask))
    _raise_problems(spec, stems, problems)
    return out
