"""Row strips (the row checkpoints) -> one pyramidal label map (pyvips, streaming).

Functions over files building lazy libvips pipelines: memory stays flat whatever the image
size; numpy holds at most one row strip. Label maps (1-band uint8 class indices) are never
interpolated or averaged: pyramid levels use ``region_shrink="mode"``. The pictures made from
a label map (overlay, preview) are in :mod:`imaging.rendering`.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from imaging.errors import ImageFormatError, vips_text

TILE = 256
#: tiffsave options shared by every tiled output
TILED_TIFF = {"tile": True, "tile_width": TILE, "tile_height": TILE, "bigtiff": True, "keep": "none"}
#: tiffsave options of the deflate TIFFs a job writes (row strips, the label and confidence
#: pyramids): zlib level 1 writes them about twice as fast as libvips' default 6 for 1.5-2.5x
#: the bytes, and the pixels are the same (docs/performance.md, "Deflate level"). A converted
#: source (:mod:`imaging.reading`) keeps libvips' default level (not measured).
DEFLATE = {"compression": "deflate", "predictor": "horizontal", "level": 1}


def load_image(path: str | Path, *, access: str = "sequential", **options) -> pyvips.Image:
    """Open an image lazily with libvips.

    Raises:
        ImageFormatError: the file cannot be read as an image.
    """
    try:
        # revalidate: a file rewritten at the same path must not come from libvips' cache
        return pyvips.Image.new_from_file(
            str(path), access=access, revalidate=True, fail_on="error", **options
        )
    except pyvips.Error as e:
        raise ImageFormatError(f"{path}: cannot be read as an image: {vips_text(e)}") from e


def check_label_image(image: pyvips.Image, what: str) -> None:
    """Raise ImageFormatError unless ``image`` is a 1-band uint8 label map."""
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
    image.tiffsave(str(path), keep="none", **DEFLATE)


def read_strip(path: str | Path) -> np.ndarray:
    """Read a label strip written by :func:`write_strip`.

    Returns:
        (h, W) uint8 class indices.

    Raises:
        ImageFormatError: the file is unreadable or is not a 1-band uint8 image.
    """
    image = load_image(path)
    check_label_image(image, str(path))
    try:
        return np.ascontiguousarray(image.numpy().reshape(image.height, image.width))
    except pyvips.Error as e:
        raise ImageFormatError(f"{path}: corrupt label strip: {vips_text(e)}") from e


# ---------------------------------------------------------------------------- label map
@dataclass(frozen=True)
class StripStream:
    """Row strips that are still being written while they are stitched.

    Attributes:
        paths: Called once per stitching pipeline with an event that is set when the
            pipeline failed; yields the local file of each strip, top to bottom, blocking until
            it exists, and returns soon after the event is set (raise to abandon the stitch,
            e.g. when the job was cancelled). Iterated in a feeder thread.
        width: Width of the label map and of every strip (px).
        height: Total height of the strips (px).
    """

    paths: Callable[[threading.Event], Iterable[str | Path]]
    width: int
    height: int


#: What the stitching functions take: the strip files in order, or a :class:`StripStream`.
Strips = Sequence[str | Path] | StripStream


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _strips_as_png(paths: Iterable[str | Path], width: int, height: int) -> Iterator[bytes]:
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


def _strip_headers(strip_paths: Sequence[str | Path]) -> tuple[int, int]:
    """Width and total height (px) of the strips, from their headers; checks them all before
    anything is written.

    Raises:
        ValueError: no strips, or strips of different widths.
        ImageFormatError: a strip is unreadable or not 1-band uint8.
    """
    if not strip_paths:
        raise ValueError("no row strips given")
    width, height = None, 0
    for p in strip_paths:
        image = load_image(p)
        check_label_image(image, str(p))
        if width is not None and image.width != width:
            raise ValueError(
                f"{p}: strip width {image.width} differs from {strip_paths[0]}'s "
                f"{width}; all row strips of one job must have the same width"
            )
        width, height = image.width, height + image.height
    return width, height


def save_stitched(
    strip_paths: Strips,
    out_path: str | Path,
    save: Callable[[pyvips.Image], None],
) -> None:
    """Call ``save`` with the strips stitched top to bottom into one lazily decoded (H, W)
    uint8 label image, which ``save`` must consume sequentially (e.g. by a ``tiffsave``).

    ``strip_paths`` is the strip files (width and height from their headers, all checked
    before anything is written) or a :class:`StripStream` (size given; each strip is read
    when its turn comes, so ``save`` runs while later strips are still being made).

    A thread decodes one strip at a time into a pipe read by libvips' streaming PNG loader
    (:func:`_strips_as_png`): an ``arrayjoin`` of lazily loaded strips would keep ~15 MiB of
    buffers per 30k-px-wide strip alive to the end (~750 MiB for 1 gigapixel), this keeps
    about one strip. On any failure ``out_path`` is removed and the real cause (e.g. an
    unreadable strip rather than libvips' "truncated PNG") is raised.
    """
    stop = threading.Event()
    if isinstance(strip_paths, StripStream):
        width, height = strip_paths.width, strip_paths.height
        paths: Iterable[str | Path] = strip_paths.paths(stop)
    else:
        width, height = _strip_headers(strip_paths)
        paths = strip_paths
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=0) as pipe:
                chunks = _strips_as_png(paths, width, height)
                while not stop.is_set():
                    try:
                        chunk = next(chunks)
                    except StopIteration:
                        return
                    except Exception as e:
                        # a strip could not be read: the real cause, recorded before the pipe
                        # closes (its end is what fails the save), so the save's error never
                        # hides it whatever the threads' timing
                        failure.append(e)
                        return
                    pipe.write(chunk)
        except BrokenPipeError:
            pass
        except Exception as e:
            if not stop.is_set():  # else a consequence of the save's own failure
                failure.append(e)

    feeder = threading.Thread(target=feed, name="stitch-feed", daemon=True)
    feeder.start()
    try:
        source = pyvips.Source.new_from_descriptor(read_fd)
        joined = pyvips.Image.pngload_source(source, access="sequential", fail_on="truncated")
        save(joined.copy(interpretation="b-w"))
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


def write_label_pyramid(
    strip_paths: Strips,
    out_path: str | Path,
    *,
    pixel_size_um: float | None = None,
    class_names: Sequence[str] | None = None,
    palette: Sequence[tuple[int, int, int]] | None = None,
) -> None:
    """Stitch label strips top to bottom into one pyramidal OME-TIFF label map.

    Strips are decoded one at a time and streamed (see :func:`save_stitched`), so memory
    holds about one strip whatever the image size. Output (:func:`imaging.ome.save_ome_pyramid`):
    uint8 single band, deflate, 256x256 tiles, sub-resolution levels in SubIFDs downsampled by
    the most frequent label of each 2x2 block (``region_shrink="mode"``), never averaged; the
    OME-XML carries the pixel size and the class names and colours when given.

    Args:
        strip_paths: Row strip files in order (row 0 first), all of the same width W, or a
            :class:`StripStream` of them.
        out_path: Output TIFF; overwritten if it exists.
        pixel_size_um: Pixel size of the source (µm/px), or None when unknown.
        class_names, palette: Class names and RGB colours by class index, for the metadata.

    Raises:
        ValueError: no strips, or strips of different widths.
        ImageFormatError: a strip is unreadable or not 1-band uint8.
        pyvips.Error: the output cannot be written (e.g. disk full).
    """
    from imaging.ome import save_ome_pyramid

    save_stitched(
        strip_paths,
        out_path,
        lambda labels: save_ome_pyramid(
            labels, out_path, name="labels", pixel_size_um=pixel_size_um,
            class_names=class_names, palette=palette, labels=True, **DEFLATE,
        ),
    )
