"""Label-map importers: decode one annotation file into (H, W) uint8 class indices.

Three annotation formats (``mask_format`` in ``dataset.yaml``):

``values``
    A single-band label map (grey or palette PNG/TIFF, 8 or 16 bit) whose pixel value is a
    class *value*; a value -> class table maps sparse codes (LumenStone: 0, 1, 3, 5, 7) to the
    dense indices 0..C-1 the model predicts.
``rgb``
    A colour-coded label map (e.g. the pellet scheme: pore = RGB 170, 0, 0). Colours are read
    explicitly as **RGB** with Pillow (palette PNGs are expanded to RGB; an alpha band is
    ignored), never through OpenCV's BGR order. A colour that is the channel-reversed (BGR)
    version of a table colour is pointed out in the error.
``ilastik``
    ilastik "Simple Segmentation" exports: a single-channel uint8 image (PNG/TIFF) or an HDF5
    dataset (``exported_data`` by default, axes such as ``yxc`` with a singleton channel) whose
    pixel value is the **1-based** ilastik label index (label 1 = the first label in the
    project's label list). Class ``value`` defaults to its position + 1. HDF5 needs ``h5py``.

Values or colours that are not in the table are never mapped silently: the error names the
file, each unknown value/colour and its pixel count. Values or colours listed in ``ignore``
become :data:`IGNORE` (skipped by the loss and the metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.errors import TrainingError

#: Class index of pixels that are unlabelled / ignored (not a class).
IGNORE = 255
#: File suffixes read with h5py instead of Pillow.
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_SHOWN = 8  # unknown values/colours listed in an error message


class DatasetError(TrainingError):
    """A dataset description or one of its images/masks is invalid; the message names the file."""


def _listing(items: list[tuple[str, int]], what: str) -> str:
    """'what (…: pixel count): {a: n, …}' with the largest ``_SHOWN`` items and a remainder."""
    items = sorted(items, key=lambda kv: -kv[1])
    shown = ", ".join(f"{k}: {n}" for k, n in items[:_SHOWN])
    rest = items[_SHOWN:]
    more = f", and {len(rest)} more ({sum(n for _, n in rest)} px)" if rest else ""
    return f"{what} not in the class table ({what[:-1]}: pixel count): {{{shown}{more}}}"


def read_single_band(path: str | Path, h5_dataset: str = "exported_data") -> np.ndarray:
    """Read a single-band label map: (H, W) unsigned integers (uint8, uint16 or uint32).

    PNG/TIFF/BMP through Pillow (grey, 16-bit grey, palette indices, bilevel); ``.h5`` files
    through h5py (dataset ``h5_dataset``, singleton axes squeezed, as ilastik writes ``yxc``).

    Raises:
        DatasetError: unreadable file, a colour (RGB/RGBA) image, a missing HDF5 dataset,
            negative or non-integer values, or not 2-D after squeezing; the message names
            the file.
    """
    path = Path(path)
    if path.suffix.lower() in HDF5_SUFFIXES:
        a = _read_h5(path, h5_dataset)
    else:
        try:
            with Image.open(path) as im:
                if im.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA"):
                    raise DatasetError(
                        f"{path}: mask is {im.mode}; expected a single-band label map (grey or "
                        "palette PNG) whose pixel values are class values; for colour-coded "
                        "masks set 'mask_format: rgb' and give each class its 'rgb' colour")
                a = np.asarray(im)
        except OSError as e:
            raise DatasetError(f"{path}: cannot read mask: {e}") from e
    if a.ndim != 2:
        raise DatasetError(f"{path}: label map has shape {a.shape}; expected (H, W)")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise DatasetError(f"{path}: label map has dtype {a.dtype}; expected integers")
    if a.size and a.min() < 0:
        raise DatasetError(f"{path}: label map has negative values (min {a.min()})")
    return a.astype(np.uint32 if a.dtype.itemsize > 2 else a.dtype, copy=False)


def _read_h5(path: Path, dataset: str) -> np.ndarray:
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is installed with the dev extras
        raise DatasetError(f"{path}: reading ilastik HDF5 exports needs h5py "
                           "(pip install h5py), or export PNG/TIFF from ilastik") from e
    try:
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise DatasetError(f"{path}: no HDF5 dataset {dataset!r} (found: {list(f)}); "
                                   "set 'h5_dataset' in dataset.yaml")
            a = np.asarray(f[dataset][()])
    except OSError as e:
        raise DatasetError(f"{path}: cannot read HDF5 file: {e}") from e
    return a.squeeze() if a.ndim > 2 else a


def read_rgb_mask(path: str | Path) -> np.ndarray:
    """Read a colour-coded label map as (H, W, 3) uint8 **RGB** (Pillow; palette expanded,
    alpha ignored).

    Raises:
        DatasetError: unreadable, or single-band (grey) where colours are expected.
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F", "1"):
                raise DatasetError(f"{path}: mask is single-band ({im.mode}) but mask_format is "
                                   "rgb (colour-coded); use 'mask_format: values' for label "
                                   "maps that store class values")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read mask: {e}") from e


@dataclass(frozen=True)
class ValueDecoder:
    """Maps single-band values to class indices: class i has value ``values[i]``.

    Attributes:
        values: Value of each class, in class-index order (unique, >= 0).
        ignore: Values that become :data:`IGNORE`.
        h5_dataset: HDF5 dataset name for ``.h5`` files.
    """

    values: tuple[int, ...]
    ignore: tuple[int, ...] = ()
    h5_dataset: str = "exported_data"

    def decode_array(self, a: np.ndarray, path: str | Path = "<mask>") -> np.ndarray:
        """(H, W) unsigned ints -> (H, W) uint8 class indices (:data:`IGNORE` for ``ignore``).

        Raises:
            DatasetError: values not in the table; names ``path``, each value and its count.
        """
        counts = np.bincount(a.ravel())
        lut = np.full(counts.size, IGNORE, np.uint8)
        known = np.zeros(counts.size, bool)
        for i, v in enumerate(self.values):
            if v < counts.size:
                lut[v], known[v] = i, True
        for v in self.ignore:
            if v < counts.size:
                known[v] = True
        bad = np.flatnonzero((counts > 0) & ~known)
        if bad.size:
            items = [(str(int(v)), int(counts[v])) for v in bad]
            raise DatasetError(f"{path}: {_listing(items, 'values')}; add them to 'classes' "
                               "(or to 'ignore') or fix the mask")
        return lut[a]

    def decode(self, path: str | Path) -> np.ndarray:
        """Read and decode one label file; see :meth:`decode_array`."""
        return self.decode_array(read_single_band(path, self.h5_dataset), path)


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint32 0xRRGGBB."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@dataclass(frozen=True)
class ColourDecoder:
    """Maps RGB colours to class indices: class i has colour ``colours[i]`` (RGB order).

    Attributes:
        colours: RGB triple of each class, in class-index order (unique).
        names: Class names (for the BGR hint in errors).
        ignore: Colours that become :data:`IGNORE`.
    """

    colours: tuple[tuple[int, int, int], ...]
    names: tuple[str, ...] = ()
    ignore: tuple[tuple[int, int, int], ...] = ()

    def decode_array(self, rgb: np.ndarray, path: str | Path = "<mask>") -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) uint8 class indices.

        Raises:
            DatasetError: colours not in the table; names ``path``, each colour as (R, G, B)
                with its pixel count, and flags colours that are a class colour in BGR order.
        """
        table = [(c, i) for i, c in enumerate(self.colours)] + [(c, IGNORE) for c in self.ignore]
        keys = _pack(np.array([c for c, _ in table], np.uint8).reshape(-1, 3))
        order = np.argsort(keys)
        keys, targets = keys[order], np.array([t for _, t in table], np.uint8)[order]
        packed = _pack(rgb)
        pos = np.minimum(np.searchsorted(keys, packed), keys.size - 1)
        hit = keys[pos] == packed
        if not hit.all():
            vals, counts = np.unique(packed[~hit], return_counts=True)
            items, hints = [], []
            by_colour = {tuple(c): n for c, n in zip(self.colours, self.names, strict=True)}
            for v, n in zip(vals.tolist(), counts.tolist(), strict=True):
                c = (v >> 16, (v >> 8) & 255, v & 255)
                items.append((f"({c[0]}, {c[1]}, {c[2]})", n))
                swapped = c[::-1]
                if swapped in by_colour and swapped != c:
                    hints.append(f"{c} is class {by_colour[swapped]!r} {swapped} in BGR order")
            hint = f" ({'; '.join(hints)}: write and read masks as RGB)" if hints else ""
            raise DatasetError(f"{path}: {_listing(items, 'colours')}{hint}; add them to "
                               "'classes' (or to 'ignore') or fix the mask")
        return targets[pos]

    def decode(self, path: str | Path) -> np.ndarray:
        """Read and decode one colour-coded label file; see :meth:`decode_array`."""
        return self.decode_array(read_rgb_mask(path), path)


def check_unique(items: Sequence, what: str) -> None:
    """Raise ValueError if ``items`` has duplicates (used by the yaml validators)."""
    seen = [tuple(i) if isinstance(i, list) else i for i in items]
    if len(set(seen)) != len(seen):
        raise ValueError(f"{what} must be unique, got {seen}")
