"""Microstructure of a label map file made anywhere (a pelletseg job, ilastik, another model):
read it in row strips, one :func:`~microstructure.partials.row_partial` per strip, merge, and
write the outputs. The same code as a job's row workers and reducer, in one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from microstructure.classes import ClassInfo
from microstructure.merge import merge_partials
from microstructure.partials import row_partial
from microstructure.report import render_outputs


def _open_labels(path: Path):
    import pyvips

    if not path.is_file():
        raise ValueError(f"{path}: no such label map file")
    try:
        image = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="truncated")
    except pyvips.Error as e:
        raise ValueError(f"{path}: not an image libvips can read ({str(e).strip().splitlines()[0]})") from None
    if image.hasalpha() and image.bands == 2:
        image = image.extract_band(0)
    if image.bands != 1 or image.format not in ("uchar", "ushort"):
        raise ValueError(f"{path}: a label map must be one band of 8-bit class values, this image "
                         f"has {image.bands} band(s) of {image.format}; export the labels (not a "
                         "colour rendering) as an 8-bit greyscale TIFF or PNG")
    return image


def analyze_label_map(labels_path: str | os.PathLike, classes: Sequence[ClassInfo], *,
                      pixel_size_um: float | None, out_dir: str | os.PathLike,
                      rows_height: int = 2048, band_width_um: float = 50.0) -> dict:
    """Compute the microstructure of a label map file and write its outputs.

    The map is read top to bottom in strips of ``rows_height`` rows (libvips, sequential
    access: memory is one strip plus the partials, never the whole map). A pyramidal TIFF is
    read at full resolution (its first page).

    Args:
        labels_path: (H, W) single-band uint8 (or uint16 with values below 256) label map
            (TIFF, BigTIFF, pyramidal TIFF, PNG, anything libvips reads); pixel values are
            the classes' ``value``.
        classes: The class table (every value in the map must be in it).
        pixel_size_um: Pixel size (µm/px), or None (outputs then in px).
        out_dir: Folder for the files of :func:`~microstructure.report.render_outputs`
            (created if needed; files are replaced).
        rows_height: Rows per strip (px, >= 1). The result does not depend on it.
        band_width_um: Radial-profile band width (µm; px without a pixel size).

    Returns:
        The ``microstructure.json`` document.

    Raises:
        ValueError: the file is missing, unreadable, damaged or not a single-band 8-bit map;
            it holds a value no class has; or any error of
            :func:`~microstructure.merge.merge_partials`.
    """
    import pyvips

    if rows_height < 1:
        raise ValueError(f"rows_height must be at least 1 px, got {rows_height}")
    path = Path(labels_path)
    image = _open_labels(path)
    H, W = image.height, image.width
    partials = []
    try:
        for y0 in range(0, H, rows_height):
            h = min(rows_height, H - y0)
            dtype = np.uint8 if image.format == "uchar" else np.uint16
            strip = np.ndarray(buffer=image.crop(0, y0, W, h).write_to_memory(),
                               dtype=dtype, shape=(h, W))
            if dtype is np.uint16:  # 16-bit exports (ilastik, ...) of values below 256
                if strip.max() > 255:
                    raise ValueError(f"{path}: label value {int(strip.max())} at rows "
                                     f"[{y0}, {y0 + h}) is above 255; class values are 0-255")
                strip = strip.astype(np.uint8)
            try:
                partials.append(row_partial(strip, y0=y0, image_shape=(H, W), classes=classes))
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
    except pyvips.Error as e:
        raise ValueError(f"{path}: the image is damaged or truncated "
                         f"({str(e).strip().splitlines()[0]})") from None
    report = merge_partials(partials, classes=classes, pixel_size_um=pixel_size_um,
                            band_width_um=band_width_um)
    report["source"] = {"labels": path.name}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in render_outputs(report).items():
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)
    return report
