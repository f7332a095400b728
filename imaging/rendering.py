"""Pictures of a label map: the colour overlay (pyramidal JPEG OME-TIFF) and the PNG preview with
its legend (pyvips, streaming), and :func:`write_pictures`, which writes a job's three pictures
(label pyramid, overlay, preview) from its row strips for the reducer and the streaming
stitcher. Label maps are never interpolated: previews sample their mode-downsampled pyramid
nearest-neighbour."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyvips

from imaging.ome import pyramid_levels, save_ome_pyramid
from imaging.palette import palette_lut
from imaging.reading import to_rgb8
from imaging.stitching import (
    Strips,
    check_label_image,
    load_image,
    save_stitched,
    write_label_pyramid,
)
from storage.blobs.layout import LABELS as LABELS_FILE
from storage.blobs.layout import OVERLAY as OVERLAY_FILE
from storage.blobs.layout import PREVIEW as PREVIEW_FILE

#: Gap between the two panels of a preview, and its legend geometry (pixels).
PREVIEW_GAP = 8
LEGEND_BOX = 14
LEGEND_PAD = 6
BACKGROUND = [255, 255, 255]


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
    check_label_image(label_image, "colourise")
    return label_image.maplut(palette_lut(palette)).copy(interpretation="srgb")


def _check_same_size(source: pyvips.Image, source_path, labels: pyvips.Image, what) -> None:
    if (source.width, source.height) != (labels.width, labels.height):
        raise ValueError(
            f"{what} is {labels.width}x{labels.height} px but the source "
            f"{source_path} is {source.width}x{source.height} px; they must match"
        )


def _open_pair(source_path, label_path) -> tuple[pyvips.Image, pyvips.Image]:
    source = to_rgb8(load_image(source_path))
    labels = load_image(label_path)
    check_label_image(labels, str(label_path))
    _check_same_size(source, source_path, labels, label_path)
    return source, labels


def write_overlay(
    source_path: str | Path,
    labels: str | Path | Strips,
    palette: Sequence[tuple[int, int, int]],
    out_path: str | Path,
    alpha: float = 0.45,
    pixel_size_um: float | None = None,
) -> None:
    """Blend the source with the colourised label map into a pyramidal JPEG OME-TIFF.

    ``out = (1 - alpha) * source_rgb8 + alpha * colour(label)``, rounded; tiled 256 px,
    JPEG Q 85, sub-resolution levels (SubIFDs) averaged (it is a picture, not labels), the
    pixel size in the OME-XML when known (:func:`imaging.ome.save_ome_pyramid`). Streams.

    Args:
        source_path: Source micrograph (any format libvips reads; see
            :func:`imaging.reading.to_rgb8`).
        labels: Label map of the same size (1-band uint8 file; page 0 of a pyramid is used),
            or the row strips in order (a list or a :class:`imaging.stitching.StripStream`),
            stitched on the fly as by :func:`write_label_pyramid` (so the overlay need not wait
            for the label map).
        palette: RGB colour of each class index.
        out_path: Output TIFF; overwritten if it exists.
        alpha: Weight of the label colours, 0-1.
        pixel_size_um: Pixel size (µm/px) recorded in the resolution tags (cm), or None.

    Raises:
        ValueError: ``alpha`` outside [0, 1], sizes differ, no strips, or a bad palette.
        ImageFormatError: the source, the label map or a strip cannot be read or converted.
        pyvips.Error: pixel data is corrupt, or the output cannot be written.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")

    def save(label_image: pyvips.Image, what: str) -> None:
        source = to_rgb8(load_image(source_path))
        _check_same_size(source, source_path, label_image, what)
        colour = colourise(label_image, palette)
        blended = (source * (1.0 - alpha) + colour * alpha).rint().cast("uchar")
        save_ome_pyramid(blended.copy(interpretation="srgb"), out_path, name="overlay",
                         pixel_size_um=pixel_size_um, compression="jpeg", Q=85)

    if isinstance(labels, (str, Path)):
        label_image = load_image(labels)
        check_label_image(label_image, str(labels))
        save(label_image, str(labels))
    else:
        save_stitched(labels, out_path, lambda image: save(image, "the row strips"))


def _labels_at(label_path: str | Path, width: int, height: int) -> pyvips.Image:
    """The label map at (width, height): the smallest mode-downsampled pyramid page that is
    still at least that big, then nearest-neighbour sampling (never interpolation)."""
    best = load_image(label_path, access="random")
    check_label_image(best, str(label_path))
    for _, level in pyramid_levels(label_path)[1:]:  # SubIFD (OME-TIFF) or page levels
        if level.width < width or level.height < height:
            break
        best = level
    if (best.width, best.height) == (width, height):
        return best
    return best.resize(width / best.width, vscale=height / best.height, kernel="nearest")


#: Smallest width of a preview's legend strip (px), whatever the image's size.
MIN_LEGEND_WIDTH = 200


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


#: Source thumbnails of a job's rows for :func:`write_pictures`: their files in row order, a
#: callable returning them (or None) when the preview is made, or None (decode the source).
Thumbnails = Sequence[str | Path] | Callable[[], Sequence[str | Path] | None] | None


def thumbnail_factor(width: int, height: int, stride: int, max_side: int = 1600) -> int | None:
    """Shrink factor f (px per thumbnail px) of the source thumbnails that row workers store
    for the preview (:func:`shrink_rows`): the largest divisor of ``stride`` that leaves the
    thumbnail at least twice the preview panel's size (:func:`preview_size`) on both axes, so
    the panel is still resampled (Lanczos) from more pixels than it has; 1 for small images.
    A divisor of the stride, so that every tile row's core (``stride`` rows) shrinks to whole
    thumbnail rows and the rows' thumbnails stitch without a seam.

    Args:
        width, height: The image (px).
        stride: The tile geometry's stride (px), T - 2 * halo.
        max_side: The preview's largest width (px), as :func:`write_preview`'s.

    Returns:
        f, or None when the stride has no divisor within half of the ideal factor (say a
        stride of 2 x a large prime): the thumbnails would hold over 4x the pixels the preview
        needs, so rows keep none and the preview decodes the source.
    """
    w, h = preview_size(width, height, max_side)
    limit = max(1, min(width // (2 * w), height // (2 * h)))
    best = max(d for d in range(1, limit + 1) if stride % d == 0)
    return best if 2 * best >= limit else None


def shrink_rows(rows: np.ndarray, factor: int) -> np.ndarray:
    """Box-average image rows by an integer factor (libvips ``shrink``): the source thumbnail a
    row worker keeps of the pixels it has already decoded, so that the preview need not decode
    the whole source again.

    Args:
        rows: (h, W, 3) uint8 image rows.
        factor: f >= 1 (:func:`thumbnail_factor`).

    Returns:
        (ceil(h / f), ceil(W / f), 3) uint8: each pixel the mean of an f x f block, rounded
        (within 1 of the exact mean); blocks cut by the bottom or right edge are completed by
        repeating the last row or column.

    Raises:
        ValueError: ``rows`` is not (h, W, 3) uint8 or ``factor`` < 1.
    """
    image = _rgb_image(rows)
    if factor < 1:
        raise ValueError(f"the shrink factor must be >= 1, got {factor}")
    h, w = rows.shape[:2]
    th, tw = -(-h // factor), -(-w // factor)
    if (th * factor, tw * factor) != (h, w):
        image = image.embed(0, 0, tw * factor, th * factor, extend="copy")
    if factor > 1:
        image = image.shrink(factor, factor)
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(th, tw, 3))


def png_bytes(rgb: np.ndarray) -> bytes:
    """A (h, W, 3) uint8 image as PNG bytes (zlib level 1: thumbnails are small and written by
    every row).

    Raises:
        ValueError: ``rgb`` is not (h, W, 3) uint8.
    """
    return _rgb_image(rgb).copy(interpretation="srgb").pngsave_buffer(compression=1, keep="none")


def _rgb_image(rgb: np.ndarray) -> pyvips.Image:
    """A (h, W, 3) uint8 array as a libvips image over its memory (no copy when contiguous;
    libvips keeps a reference to the buffer).

    Raises:
        ValueError: ``rgb`` is not (h, W, 3) uint8.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (h, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    data = np.ascontiguousarray(rgb)
    return pyvips.Image.new_from_memory(data.data, rgb.shape[1], rgb.shape[0], 3, "uchar")


def _source_panel(source: pyvips.Image, thumbnails: Sequence[str | Path] | None, w: int,
                  h: int) -> pyvips.Image:
    """The preview's left panel, (w, h) sRGB: resized from the rows' stitched source
    thumbnails when given and readable (:func:`shrink_rows`), else from the whole source
    (decoded again)."""
    small = _stitched_thumbnails(thumbnails, source) if thumbnails else None
    if small is not None:
        source = small
    if (w, h) != (source.width, source.height):
        source = source.resize(w / source.width, vscale=h / source.height)
    # resize can be off by one pixel: pin the size exactly
    return source.embed(0, 0, w, h, extend="copy")


def _stitched_thumbnails(thumbnails: Sequence[str | Path], source: pyvips.Image) -> pyvips.Image | None:
    """The thumbnails stacked top to bottom, decoded into memory (they are small), or None when
    one cannot be read or they do not fit together (different widths, not 3-band uint8,
    larger than the source): the preview then falls back to the source."""
    try:
        parts = [pyvips.Image.new_from_file(str(p)).copy_memory() for p in thumbnails]
    except pyvips.Error:
        return None
    if any((p.bands, p.format, p.width) != (3, "uchar", parts[0].width) for p in parts):
        return None
    small = parts[0]
    for part in parts[1:]:  # join, not arrayjoin: arrayjoin pads every cell to the largest
        small = small.join(part, "vertical")
    if small.width > source.width or small.height > source.height:
        return None
    # the source's resolution, as the panel resized from the source keeps it (PNG pHYs)
    return small.copy(interpretation="srgb", xres=source.xres, yres=source.yres)


def write_preview(
    source_path: str | Path,
    label_path: str | Path,
    palette: Sequence[tuple[int, int, int]],
    out_path: str | Path,
    max_side: int = 1600,
    names: Sequence[str] | None = None,
    thumbnails: Sequence[str | Path] | None = None,
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
        thumbnails: The rows' source thumbnails in order (:func:`shrink_rows` by one factor,
            PNG files), used for the left panel instead of decoding the whole source again;
            None: the source is resized.

    Raises:
        ValueError: ``max_side`` too small, sizes differ, or a bad palette.
        ImageFormatError: the source or label map cannot be read or converted.
        pyvips.Error: pixel data is corrupt, or the output cannot be written.
    """
    if max_side < 2 + PREVIEW_GAP:
        raise ValueError(f"max_side must be at least {2 + PREVIEW_GAP} px, got {max_side}")
    source, _ = _open_pair(source_path, label_path)
    w, h = preview_size(source.width, source.height, max_side)
    source = _source_panel(source, thumbnails, w, h)
    small_labels = _labels_at(label_path, w, h).embed(0, 0, w, h, extend="copy")
    colour = colourise(small_labels, palette)
    panels = source.join(colour, "horizontal", shim=PREVIEW_GAP, background=BACKGROUND)
    # a legend at least MIN_LEGEND_WIDTH px wide: a tiny image (down to 1 x 1 px) still fits a
    # colour box; the panels are padded to its width
    legend = _legend(palette, names, max(panels.width, MIN_LEGEND_WIDTH))
    out = panels.join(legend, "vertical", background=BACKGROUND, expand=True)
    out.copy(interpretation="srgb").pngsave(str(out_path), compression=6, keep="none")


def write_pictures(
    source_path: str | Path,
    strips: Strips,
    palette: Sequence[tuple[int, int, int]],
    work: Path,
    names: Sequence[str] | None = None,
    abandon: Callable[[], None] | None = None,
    pixel_size_um: float | None = None,
    thumbnails: Thumbnails = None,
) -> dict[str, float]:
    """Write the label pyramid (``labels.tif``), the overlay (``overlay.tif``) and the preview
    (``preview.png``) of one job's row strips into folder ``work``.

    The overlay is rendered from the strips in a second thread while the label pyramid (then
    the preview, which reads it) is written: each libvips pipeline is mostly sequential (the
    streaming PNG decode of the strips, the preview's resize), so together they use two cores.
    ``abandon`` is called as soon as either pipeline fails, so that a
    :class:`imaging.stitching.StripStream` the other one waits on can stop waiting. Both TIFFs
    are pyramidal OME-TIFFs (:mod:`imaging.ome`) with ``pixel_size_um`` (µm/px) when known; the
    label map's metadata names the classes (``names``) and their colours (``palette``). The
    preview's left panel comes from the rows' source ``thumbnails`` when given (see
    :func:`write_preview`), which saves decoding the whole source a second time; a callable
    is asked for them once the label map is written (a streaming stitch: rows still running
    when it starts).

    Returns:
        Seconds (wall) spent on each file, by file name: the overlay's overlap the other two's.

    Raises:
        ValueError, ImageFormatError, pyvips.Error: as :func:`write_label_pyramid`,
            :func:`write_overlay` and :func:`write_preview` (the first failure is raised).
    """
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def guarded(fn: Callable[[], None], name: str) -> None:
        started = time.perf_counter()
        try:
            fn()
        except BaseException:
            if abandon is not None:
                abandon()
            raise
        seconds[name] = time.perf_counter() - started

    def labels_and_preview() -> None:
        guarded(lambda: write_label_pyramid(strips, work / LABELS_FILE,
                                            pixel_size_um=pixel_size_um, class_names=names,
                                            palette=palette), LABELS_FILE)
        guarded(lambda: write_preview(source_path, work / LABELS_FILE, palette,
                                      work / PREVIEW_FILE, names=names,
                                      thumbnails=thumbnails() if callable(thumbnails)
                                      else thumbnails), PREVIEW_FILE)

    # leaving the block waits for the overlay, also when the label map failed
    with ThreadPoolExecutor(1, thread_name_prefix="reduce-overlay") as pool:
        overlay = pool.submit(guarded, lambda: write_overlay(source_path, strips, palette,
                                                             work / OVERLAY_FILE,
                                                             pixel_size_um=pixel_size_um),
                              OVERLAY_FILE)
        labels_and_preview()
    overlay.result()  # the overlay's error, if it had one
    return seconds
