"""Row strips -> pyramidal label map, colour overlay and preview (pyvips, streaming).

Functions over files building lazy libvips pipelines: memory stays flat whatever the image
size; numpy holds at most one row strip. Label maps (1-band uint8 class indices) are never
interpolated or averaged: pyramid levels use ``region_shrink="mode"``, previews sample them
nearest-neighbour.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyvips

from storage.palette import palette_lut
from worker.errors import ImageFormatError
from worker.reading import to_rgb8

TILE = 256
#: Gap between the two panels of a preview, and its legend geometry (pixels).
PREVIEW_GAP = 8
LEGEND_BOX = 14
LEGEND_PAD = 6
BACKGROUND = [255, 255, 255]
#: tiffsave options shared by every tiled output
_TILED = {"tile": True, "tile_width": TILE, "tile_height": TILE, "bigtiff": True, "strip": True}


def _load(path: str | Path, *, access: str = "sequential", **options) -> pyvips.Image:
    try:
        # revalidate: a file rewritten at the same path must not come from libvips' cache
        return pyvips.Image.new_from_file(
            str(path), access=access, revalidate=True, fail_on="error", **options
        )
    except pyvips.Error as e:
        raise ImageFormatError(f"{path}: cannot be read as an image: {e}") from e


def _check_label_image(image: pyvips.Image, what: str) -> None:
    if image.bands != 1 or image.format != "uchar":
        raise ImageFormatError(
            f"{what}: a label map must be 1-band uint8, got {image.bands} band(s) of {image.format}"
        )


# ---------------------------------------------------------------------------- row strips
def write_strip(labels: np.ndarray, path: str | Path) -> None:
    """Write one label strip (the row checkpoint) as a deflate-compressed uint8 TIFF.

    Args:
        labels: (h, W) uint8 class indices.
        path: Output file; overwritten if it exists.

    Raises:
        ValueError: ``labels`` is not a 2-D uint8 array, or is empty.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8 or labels.size == 0:
        raise ValueError(
            f"a label strip must be a non-empty (h, W) uint8 array, got shape {labels.shape} "
            f"of {labels.dtype}"
        )
    image = pyvips.Image.new_from_array(np.ascontiguousarray(labels), interpretation="b-w")
    image.tiffsave(str(path), compression="deflate", predictor="horizontal", strip=True)


def read_strip(path: str | Path) -> np.ndarray:
    """Read a label strip written by :func:`write_strip`.

    Returns:
        (h, W) uint8 class indices.

    Raises:
        ImageFormatError: the file is unreadable or is not a 1-band uint8 image.
    """
    image = _load(path)
    _check_label_image(image, str(path))
    try:
        return np.ascontiguousarray(image.numpy().reshape(image.height, image.width))
    except pyvips.Error as e:
        raise ImageFormatError(f"{path}: corrupt label strip: {e}") from e


# ---------------------------------------------------------------------------- label map
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _strips_as_png(paths: Sequence[str | Path], width: int, height: int) -> Iterator[bytes]:
    """The strips, top to bottom, as the bytes of one uncompressed 8-bit greyscale PNG.

    Stored (level 0) deflate blocks make the encoding little more than a copy; one strip is
    decoded at a time.

    Raises:
        ValueError: a strip's width, or the total height, differs from the header's.
    """
    yield b"\x89PNG\r\n\x1a\n" + _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    )
    deflate = zlib.compressobj(0)
    rows_per_chunk = max(1, (4 << 20) // (width + 1))
    done = 0
    for p in paths:
        strip = read_strip(p)
        if strip.shape[1] != width or done + strip.shape[0] > height:
            raise ValueError(f"{p}: strip {strip.shape} changed while it was being stitched")
        for y in range(0, strip.shape[0], rows_per_chunk):
            part = strip[y : y + rows_per_chunk]
            scanlines = np.zeros((part.shape[0], width + 1), np.uint8)  # filter byte 0
            scanlines[:, 1:] = part
            data = deflate.compress(scanlines.data)
            if data:
                yield _png_chunk(b"IDAT", data)
        done += strip.shape[0]
    if done != height:
        raise ValueError(f"strips hold {done} rows, their headers said {height}")
    yield _png_chunk(b"IDAT", deflate.flush()) + _png_chunk(b"IEND", b"")


def write_label_pyramid(strip_paths: Sequence[str | Path], out_path: str | Path) -> None:
    """Stitch label strips top to bottom into one pyramidal tiled BigTIFF label map.

    Strips are decoded one at a time and streamed through libvips' PNG loader (see
    :func:`_strips_as_png`), so memory holds about one strip whatever the image size.
    Output: uint8 single band, deflate, 256x256 tiles, pyramid levels downsampled by the
    most frequent label of each 2x2 block (``region_shrink="mode"``), never averaged.

    Args:
        strip_paths: Row strip files in order (row 0 first), all of the same width W.
        out_path: Output TIFF; overwritten if it exists.

    Raises:
        ValueError: no strips, or strips of different widths.
        ImageFormatError: a strip is unreadable or not 1-band uint8.
        pyvips.Error: the output cannot be written (e.g. disk full).
    """
    if not strip_paths:
        raise ValueError("write_label_pyramid: no row strips given")
    width, height = None, 0
    for p in strip_paths:  # headers only: check every strip before writing anything
        image = _load(p)
        _check_label_image(image, str(p))
        if width is not None and image.width != width:
            raise ValueError(
                f"{p}: strip width {image.width} differs from {strip_paths[0]}'s "
                f"{width}; all row strips of one job must have the same width"
            )
        width, height = image.width, height + image.height
    # arrayjoin of lazily loaded strips keeps ~15 MiB of buffers per 30k-px-wide strip alive
    # to the end (~750 MiB for 1 gigapixel): instead a thread decodes one strip at a time
    # into a pipe, read by libvips' streaming PNG loader (~250 MiB RSS for 1 gigapixel).
    read_fd, write_fd = os.pipe()
    stop = threading.Event()
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=0) as pipe:
                for chunk in _strips_as_png(strip_paths, width, height):
                    if stop.is_set():
                        return
                    pipe.write(chunk)
        except BrokenPipeError:
            pass
        except Exception as e:  # noqa: BLE001 -- re-raised in the calling thread
            failure.append(e)

    feeder = threading.Thread(target=feed, name="label-pyramid-feed", daemon=True)
    feeder.start()
    try:
        source = pyvips.Source.new_from_descriptor(read_fd)
        joined = pyvips.Image.pngload_source(source, access="sequential", fail_on="truncated")
        joined.copy(interpretation="b-w").tiffsave(
            str(out_path),
            pyramid=True,
            region_shrink="mode",
            compression="deflate",
            predictor="horizontal",
            **_TILED,
        )
    except BaseException as e:
        stop.set()
        with os.fdopen(read_fd, "rb", closefd=False) as pipe:  # unblock the feeder
            while pipe.read(1 << 20):
                pass
        feeder.join()
        os.close(read_fd)
        Path(out_path).unlink(missing_ok=True)
        if failure and isinstance(e, pyvips.Error):
            raise failure[0] from e  # the real cause: a strip could not be read
        raise
    feeder.join()
    os.close(read_fd)
    if failure:
        Path(out_path).unlink(missing_ok=True)
        raise failure[0]


# ---------------------------------------------------------------------------- colour
def colourise(label_image: pyvips.Image, palette: Sequence[tuple[int, int, int]]) -> pyvips.Image:
    """Map class indices to display colours with a lookup table (lazily).

    Args:
        label_image: (H, W) 1-band uchar class indices.
        palette: RGB colour (0-255) of each class index; indices beyond it become black.

    Returns:
        (H, W, 3) uchar sRGB image.

    Raises:
        ImageFormatError: ``label_image`` is not 1-band uchar.
        ValueError: the palette is empty, longer than 256 or holds a bad colour.
    """
    _check_label_image(label_image, "colourise")
    return label_image.maplut(palette_lut(palette)).copy(interpretation="srgb")


def _open_pair(source_path, label_path) -> tuple[pyvips.Image, pyvips.Image]:
    source = to_rgb8(_load(source_path))
    labels = _load(label_path)
    _check_label_image(labels, str(label_path))
    if (source.width, source.height) != (labels.width, labels.height):
        raise ValueError(
            f"{label_path} is {labels.width}x{labels.height} px but the source "
            f"{source_path} is {source.width}x{source.height} px; they must match"
        )
    return source, labels


def write_overlay(
    source_path: str | Path,
    label_path: str | Path,
    palette: Sequence[tuple[int, int, int]],
    out_path: str | Path,
    alpha: float = 0.45,
) -> None:
    """Blend the source with the colourised label map into a pyramidal JPEG BigTIFF.

    ``out = (1 - alpha) * source_rgb8 + alpha * colour(label)``, rounded; tiled 256 px,
    JPEG Q 85, pyramid levels averaged (it is a picture, not labels). Streams.

    Args:
        source_path: Source micrograph (any format libvips reads; see
            :func:`worker.reading.to_rgb8`).
        label_path: Label map of the same size (1-band uint8; page 0 of a pyramid is used).
        palette: RGB colour of each class index.
        out_path: Output TIFF; overwritten if it exists.
        alpha: Weight of the label colours, 0-1.

    Raises:
        ValueError: ``alpha`` outside [0, 1], sizes differ, or a bad palette.
        ImageFormatError: the source or label map cannot be read or converted.
        pyvips.Error: pixel data is corrupt, or the output cannot be written.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    source, labels = _open_pair(source_path, label_path)
    colour = colourise(labels, palette)
    blended = (source * (1.0 - alpha) + colour * alpha).rint().cast("uchar")
    blended.copy(interpretation="srgb").tiffsave(
        str(out_path), pyramid=True, compression="jpeg", Q=85, **_TILED
    )


def _labels_at(label_path: str | Path, width: int, height: int) -> pyvips.Image:
    """The label map at (width, height): the smallest mode-downsampled pyramid page that is
    still at least that big, then nearest-neighbour sampling (never interpolation)."""
    best = _load(label_path, access="random")
    _check_label_image(best, str(label_path))
    for page in range(1, best.get("n-pages") if best.get_typeof("n-pages") else 1):
        level = _load(label_path, access="random", page=page)
        if level.width < width or level.height < height or level.bands != 1:
            break
        best = level if level.format == "uchar" else best
    if (best.width, best.height) == (width, height):
        return best
    return best.resize(width / best.width, vscale=height / best.height, kernel="nearest")


def _legend(palette: Sequence[tuple[int, int, int]], names: Sequence[str] | None, width: int):
    """A legend strip (width px wide): colour boxes, with names where text rendering works."""
    opts = {"expand": True, "background": BACKGROUND}
    lines, line = [], None
    for i, rgb in enumerate(palette):
        box = (pyvips.Image.black(LEGEND_BOX, LEGEND_BOX, bands=3) + list(rgb)).cast("uchar")
        item = box.embed(1, 1, LEGEND_BOX + 2, LEGEND_BOX + 2)  # 1-px black frame
        try:
            text = pyvips.Image.text(names[i] if names else str(i), dpi=72, height=LEGEND_BOX)
            text = (255 - text).cast("uchar")
            text = text.bandjoin([text, text])
            item = item.join(text, "horizontal", shim=4, align="centre", **opts)
        except pyvips.Error:  # libvips built without text support: boxes only
            pass
        if line is not None and line.width + 3 * LEGEND_PAD + item.width > width - 2 * LEGEND_PAD:
            lines.append(line)
            line = None
        # join, not arrayjoin: arrayjoin makes every cell as big as the largest
        line = item if line is None else line.join(item, "horizontal", shim=3 * LEGEND_PAD, **opts)
    lines.append(line)
    legend = lines[0]
    for extra in lines[1:]:
        legend = legend.join(extra, "vertical", shim=LEGEND_PAD, **opts)
    legend = legend.crop(0, 0, min(legend.width, width - 2 * LEGEND_PAD), legend.height)
    return legend.copy(interpretation="srgb").embed(
        LEGEND_PAD,
        LEGEND_PAD,
        width,
        legend.height + 2 * LEGEND_PAD,
        extend="background",
        background=BACKGROUND,
    )


def preview_size(width: int, height: int, max_side: int = 1600) -> tuple[int, int]:
    """Size (w, h) of each panel of a preview of a (width x height) image: two panels side by
    side plus :data:`PREVIEW_GAP` fit in ``max_side``; the panel height is at most
    ``max_side``; images are never enlarged."""
    scale = min(1.0, (max_side - PREVIEW_GAP) / (2 * width), max_side / height)
    return max(1, int(width * scale)), max(1, int(height * scale))


def write_preview(
    source_path: str | Path,
    label_path: str | Path,
    palette: Sequence[tuple[int, int, int]],
    out_path: str | Path,
    max_side: int = 1600,
    names: Sequence[str] | None = None,
) -> None:
    """Write a PNG preview: downsampled source (left), colourised labels (right), legend below.

    The source is resized with libvips' default (Lanczos) kernel; the label map is sampled
    nearest-neighbour from its mode-downsampled pyramid (never interpolated), so every label
    pixel has exactly a palette colour. Total width ``2 * w + PREVIEW_GAP <= max_side`` with
    (w, h) from :func:`preview_size`; the legend strip adds some rows at the bottom.

    Args:
        source_path: Source micrograph.
        label_path: Label map of the same size (ideally the pyramid from
            :func:`write_label_pyramid`).
        palette: RGB colour of each class index.
        out_path: Output PNG; overwritten if it exists.
        max_side: Largest width (px) of the preview.
        names: Class names for the legend (optional; indices are shown otherwise).

    Raises:
        ValueError: ``max_side`` too small, sizes differ, or a bad palette.
        ImageFormatError: the source or label map cannot be read or converted.
        pyvips.Error: pixel data is corrupt, or the output cannot be written.
    """
    if max_side < 2 + PREVIEW_GAP:
        raise ValueError(f"max_side must be at least {2 + PREVIEW_GAP} px, got {max_side}")
    source, _ = _open_pair(source_path, label_path)
    w, h = preview_size(source.width, source.height, max_side)
    if (w, h) != (source.width, source.height):
        source = source.resize(w / source.width, vscale=h / source.height)
    # resize can be off by one pixel: pin the size exactly
    source = source.embed(0, 0, w, h, extend="copy")
    small_labels = _labels_at(label_path, w, h).embed(0, 0, w, h, extend="copy")
    colour = colourise(small_labels, palette)
    panels = source.join(colour, "horizontal", shim=PREVIEW_GAP, background=BACKGROUND)
    legend = _legend(palette, names, panels.width)
    out = panels.join(legend, "vertical", background=BACKGROUND)
    out.copy(interpretation="srgb").pngsave(str(out_path), compression=6, strip=True)
