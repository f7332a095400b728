"""Image reading with pyvips, by region: the whole image is never decoded into memory.

Conversion rules to the model's 8-bit RGB input (applied identically everywhere):

- 1 band (grey) -> RGB by replicating the band; 2 bands (grey + alpha) -> drop alpha, replicate.
- 4 bands: RGBA -> drop alpha; CMYK (by TIFF interpretation) -> sRGB through libvips'
  colour management. Where alpha is 0 no image covers the pixel: the conversion also writes a
  no-data mask (:func:`alpha_nodata`, :func:`write_nodata`), which the rows label as the mount.
- 8-bit unsigned: unchanged. 16-bit unsigned: the high byte of its *significant bits*
  (``min(v >> (b - 8), 255)`` for ``b`` significant bits; ``v >> 8`` when ``b`` = 16), a fixed
  linear map of 0..2^b - 1 onto 0..255 that is the same for every row and worker, and for every
  image of one camera (no per-image stretch, so results do not depend on which part of the
  image a worker sees, and a phase keeps its brightness from pellet to pellet). ``b`` is given
  with the job (a 12-bit camera's plain 16-bit TIFF says nothing of it), else read from the
  file (OME-XML ``Pixels/@SignificantBits``, CZI ``Information/Image/ComponentBitCount``, a
  TIFF's ``MaxSampleValue``), else 16: see :func:`significant_bits_of`.
- 16-bit signed: negatives become 0, then as 16-bit unsigned with at most 15 significant bits
  (the type's non-negative range): ``min(v >> (b - 8), 255)``, ``v >> 7`` when nothing says
  ``b`` (0..32767 onto 0..255). A 12-bit camera's counts saved as int16 (0..4095) therefore
  need ``b`` = 12 like the unsigned ones, or they read at 1/8 of their brightness.
- 32-bit float (Fiji's flat-field output): ``round(255 * (v - lo) / (hi - lo))`` clipped to
  0..255, NaN -> 0 (+inf -> 255, -inf -> 0), with ``lo, hi`` the ImageJ display range (``min=``/``max=`` of an ImageJ
  ImageDescription) when the file has one, else its finite samples' minimum and maximum,
  reaching at most a quarter of their central range beyond their 0.01st and 99.99th
  percentiles (:mod:`imaging.display_range`: a few hot pixels do not darken the rest; made
  once per image, two passes or more, so every row gets the same map; see
  :func:`float_range`). 64-bit float is treated alike.
- Anything else (8/32-bit signed, 32-bit unsigned, complex, > 4 bands) is rejected with
  :class:`ImageFormatError`. docs/formats.md states the same rules.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from imaging.display_range import clipped_range
from imaging.errors import (
    ImageFormatError,
    OutputWriteError,
    disk_message,
    vips_text,
    write_failure,
)
from imaging.integrity import (
    FAIL_ON,
    DeflateDamage,
    check_deflate_rows,
    damaged_message,
    decode_detail,
    is_tiff_page0,
)

SUPPORTED_FORMATS = ("uchar", "ushort", "short", "float", "double")
#: The value of a no-data pixel in a no-data mask (:func:`write_nodata`): no image covers it.
NODATA = 255
#: Significant bits a 16-bit sample may declare (OME ``SignificantBits``, CZI
#: ``ComponentBitCount``, TIFF ``MaxSampleValue``, a job's ``significant_bits``): 8 (an 8-bit
#: camera's samples stored in 16 bits) to 16.
SIGNIFICANT_BITS = range(8, 17)
#: The 16-bit sample types (numpy dtype names) that significant bits apply to, with the bits of
#: their non-negative range: what a conversion uses when nothing says fewer, and the most it
#: uses (a signed 16-bit sample holds at most 15 bits of a camera's counts).
SAMPLE_BITS = {"uint16": 16, "int16": 15}
#: Samples per numpy strip of a float image's range passes (:func:`float_range`): 16 MiB of
#: float32.
STRIP_SAMPLES = 1 << 22
#: What the bit-depth error lists as accepted.
SUPPORTED_DEPTHS = "8- or 16-bit unsigned, 16-bit signed or 32-bit float samples"


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of a source image.

    Attributes:
        path: Local file.
        width, height: Size (px).
        bands: Band count as stored.
        format: libvips band format (``uchar``, ``ushort``, ...).
        tiled: True for a tiled TIFF that rows can read without decoding the rest.
        orientation: The orientation the file asks viewers to show it in (EXIF / TIFF
            ``Orientation``, 1-8: 1 upright as stored, 6 turned 90° clockwise, ...); 1 where it
            records none. pelletseg reads the pixels as stored whatever it says.
    """

    path: Path
    width: int
    height: int
    bands: int
    format: str
    tiled: bool
    orientation: int = 1

    @property
    def is_model_ready(self) -> bool:
        """True for a tiled 8-bit 3-band TIFF (as :func:`write_model_ready` writes). Whether
        rows read a *source* directly is :attr:`imaging.formats.SourceInfo.is_model_ready`'s
        to say (it also asks for a compression every libtiff decodes)."""
        return self.tiled and self.bands == 3 and self.format == "uchar"


def require_file(path: Path) -> None:
    """Check that ``path`` exists and is not empty before any decoder sees it.

    Raises:
        ImageFormatError: the file does not exist, or has 0 bytes.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise ImageFormatError(f"{path}: file does not exist") from e
    if size == 0:
        raise ImageFormatError(f"{path}: file is empty (0 bytes), so an interrupted copy or "
                               "upload is likely; copy or upload the image again")


def open_image(path: str | os.PathLike, *, max_pixels: int, access: str = "random") -> pyvips.Image:
    """Open ``path`` lazily and check it is an image pelletseg can convert.

    Args:
        path: Local image file (TIFF, BigTIFF, PNG, JPEG, ... anything libvips reads).
        max_pixels: Largest accepted width x height (decompression-bomb guard).
        access: libvips access pattern: ``random`` for region reads, ``sequential`` for one
            top-to-bottom pass.

    Returns:
        A lazy pyvips image (page 0 of multi-page files). Pixels are decoded on demand;
        truncated or corrupt pixel data raises :class:`ImageFormatError` when read.

    Raises:
        ImageFormatError: missing, empty, not an image, zero-size, too large, or a band count /
            bit depth that cannot be converted to 8-bit RGB.
    """
    path = Path(path)
    require_file(path)
    try:
        # decode warnings are errors: a damaged tile never becomes pixels (imaging/integrity.py)
        # revalidate: a file replaced at the same path must not come from libvips' cache
        image = pyvips.Image.new_from_file(str(path), access=access, fail_on=FAIL_ON,
                                           revalidate=True)
    except pyvips.Error as e:
        kind = sniff_format(path)
        if kind:
            raise ImageFormatError(
                f"{path.name}: a {kind} file whose header or pixel data cannot be decoded "
                f"({decode_detail(e)}); the file is truncated or corrupt: upload it again"
            ) from e
        raise ImageFormatError(
            f"{path.name}: not a readable image ({_first_line(e)}); pelletseg reads "
            "TIFF/BigTIFF, PNG and JPEG micrographs: if it is one, its header is damaged: "
            "upload it again"
        ) from e
    check_image(image, path.name, max_pixels=max_pixels)
    return image


_MAGIC = {
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"II+\x00": "BigTIFF", b"MM\x00+": "BigTIFF",
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG",
}


def sniff_format(path: str | os.PathLike) -> str | None:
    """Image format named by the file's first bytes (TIFF, BigTIFF, PNG, JPEG), or None."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _first_line(e: Exception) -> str:
    return vips_text(e, first_line=True)  # paths as text, never b'...'


def check_image(image: pyvips.Image, name: str, *, max_pixels: int) -> None:
    """Raise :class:`ImageFormatError` if ``image`` has a size, band count or format that
    pelletseg does not accept (see the module docstring)."""
    if image.width < 1 or image.height < 1:
        raise ImageFormatError(f"{name}: image has zero size ({image.width} x {image.height} px)")
    if image.width * image.height > max_pixels:
        raise ImageFormatError(
            f"{name}: {image.width} x {image.height} px = {image.width * image.height:,} px "
            f"exceeds the limit of {max_pixels:,} px (PELLETSEG_MAX_PIXELS); split the image or "
            "raise the limit if it is genuine"
        )
    check_pixel_format(image, name)


def check_pixel_format(image: pyvips.Image, name: str) -> None:
    """Raise :class:`ImageFormatError` if ``image``'s band count or sample format cannot be
    converted to 8-bit RGB (see the module docstring)."""
    if image.bands not in (1, 2, 3, 4):
        raise ImageFormatError(
            f"{name}: {image.bands} bands are not supported; save the micrograph as grey, RGB "
            "or RGBA"
        )
    if image.format not in SUPPORTED_FORMATS:
        raise ImageFormatError(
            f"{name}: pixel format {image.format} is not supported; pelletseg reads "
            f"{SUPPORTED_DEPTHS}: save the micrograph in one of those"
        )


def significant_bits_of(given: int | None, recorded: int | None, dtype: str) -> int | None:
    """The significant bits a conversion uses for a source of numpy ``dtype``: for the 16-bit
    types of :data:`SAMPLE_BITS`, ``given`` (with the job), else ``recorded`` (by the file)
    where it is in :data:`SIGNIFICANT_BITS`, else the type's bits (16 unsigned, 15 signed), at
    most the type's bits (16 given for ``int16`` is 15: converted as it is); None for every
    other sample type (the number applies to 16-bit samples only: a batch of 8- and 16-bit
    files may share one job option).

    Raises:
        ValueError: ``given`` outside :data:`SIGNIFICANT_BITS`.
    """
    if given is not None and given not in SIGNIFICANT_BITS:
        raise ValueError(f"significant bits must be 8 to 16, got {given}")
    most = SAMPLE_BITS.get(dtype)
    if most is None:
        return None
    if given is not None:
        return min(given, most)
    return min(recorded, most) if recorded in SIGNIFICANT_BITS else most


def to_rgb8(image: pyvips.Image, value_range: tuple[float, float] | None = None,
            significant_bits: int | None = None) -> pyvips.Image:
    """Convert a checked image to 3-band 8-bit sRGB by the module's rules (lazy).

    Args:
        image: 1-4 bands of a supported format.
        value_range: ``(lo, hi)`` mapped onto 0..255 for float images; None takes the ImageJ
            range or the image's min..max (:func:`float_range`, a pass over the image).
        significant_bits: Significant bits of 16-bit samples (8-16, see
            :func:`significant_bits_of`); None: the type's (16 unsigned, 15 signed). Ignored
            for other formats.

    Raises:
        ImageFormatError: band count or format outside the supported set.
    """
    check_pixel_format(image, "image")
    if image.bands == 4 and image.interpretation == "cmyk":
        image = image.colourspace("srgb")
    elif image.bands in (2, 4):
        image = image.extract_band(0, n=image.bands - 1)
    image = to_uint8(image, value_range, significant_bits)
    if image.bands == 1:
        image = image.bandjoin([image, image])
    return image.copy(interpretation="srgb")


def to_uint8(image: pyvips.Image, value_range: tuple[float, float] | None = None,
             significant_bits: int | None = None) -> pyvips.Image:
    """Map a supported sample format onto uchar by the module's bit-depth rules (lazy, any
    band count); ``significant_bits`` as :func:`to_rgb8`.

    Raises:
        ImageFormatError: a format outside :data:`SUPPORTED_FORMATS`.
        ValueError: ``significant_bits`` outside :data:`SIGNIFICANT_BITS`.
    """
    fmt = image.format
    if fmt == "uchar":
        return image
    if fmt in ("ushort", "short"):
        dtype = "uint16" if fmt == "ushort" else "int16"
        bits = significant_bits_of(significant_bits, None, dtype)
        if fmt == "short":
            image = (image < 0).ifthenelse(0, image)
        if bits == SAMPLE_BITS[dtype]:  # the whole range: nothing above it to clip
            return (image >> (bits - 8)).cast("uchar")
        shifted = image >> (bits - 8) if bits > 8 else image
        return (shifted > 255).ifthenelse(255, shifted).cast("uchar")  # above 2^b - 1: white
    if fmt in ("float", "double"):
        lo, hi = value_range if value_range is not None else float_range(image)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        finite = image == image  # NaN != NaN
        out = ((image - lo) * scale).rint()
        out = (out < 0).ifthenelse(0, (out > 255).ifthenelse(255, out))
        return finite.ifthenelse(out, 0).cast("uchar")
    raise ImageFormatError(f"pixel format {fmt} is not supported; pelletseg reads {SUPPORTED_DEPTHS}")


def imagej_range(description: str | None) -> tuple[float, float] | None:
    """The display range ``(min, max)`` of an ImageJ ImageDescription (``ImageJ=...`` with
    ``min=`` and ``max=`` lines), or None when it has none."""
    if not description or not description.startswith("ImageJ="):
        return None
    values = {}
    for line in description.splitlines():
        key, _, value = line.partition("=")
        if key in ("min", "max"):
            try:
                values[key] = float(value)
            except ValueError:
                return None
    if "min" in values and "max" in values and values["max"] > values["min"]:
        return values["min"], values["max"]
    return None


def float_range(image: pyvips.Image) -> tuple[float, float]:
    """``(lo, hi)`` of a float image: the ImageJ display range of its ImageDescription when
    present, else the minimum and maximum of its finite samples over all bands, bounded by
    their percentiles (:func:`imaging.display_range.clipped_range`: a few hot pixels do not set it; NaN and
    +-inf are left out, as :func:`imaging.formats.bands.value_range` does). One streaming pass
    for the minimum and maximum, then usually one more over numpy strips (random access)."""
    description = image.get("image-description") if image.get_typeof("image-description") else None
    found = imagej_range(description)
    if found is not None:
        return found
    finite = image.abs() < float("inf")  # NaN compares false
    lo = finite.ifthenelse(image, float("inf")).min()
    hi = finite.ifthenelse(image, float("-inf")).max()
    if lo == float("inf"):  # no finite sample
        return 0.0, 0.0
    rows = max(1, STRIP_SAMPLES // (image.width * image.bands))

    def strips():
        for y0 in range(0, image.height, rows):
            yield image.crop(0, y0, image.width, min(rows, image.height - y0)).numpy()

    return clipped_range(strips, float(lo), float(hi))


def image_info(path: str | os.PathLike, *, max_pixels: int) -> ImageInfo:
    """Header of ``path`` (opens it; decodes no pixels).

    Raises:
        ImageFormatError: as :func:`open_image`.
    """
    image = open_image(path, max_pixels=max_pixels)
    # libvips' TIFF loader sets "tile-width" only for tiled TIFFs (strip TIFFs have none).
    loader = image.get("vips-loader") if image.get_typeof("vips-loader") else ""
    tiled = "tiff" in loader and image.get_typeof("tile-width") != 0
    orientation = image.get("orientation") if image.get_typeof("orientation") else 1
    return ImageInfo(Path(path), image.width, image.height, image.bands, image.format, tiled,
                     orientation if orientation in range(2, 9) else 1)


def write_model_ready(
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    max_pixels: int,
    image: pyvips.Image | None = None,
    value_range: tuple[float, float] | None = None,
    tiff_pages: Sequence[int] | None = None,
    significant_bits: int | None = None,
    nodata_path: str | os.PathLike | None = None,
) -> ImageInfo:
    """Convert any supported image into a tiled (256 px), deflate-compressed 8-bit RGB BigTIFF
    in one streaming pass, so every row can then read its strip cheaply. The source's metadata
    is not copied (``keep="none"``: no stale OME-XML or resolution of another image).

    Args:
        path: Source file (named in errors).
        out_path: Output TIFF; replaced atomically through a ``.part`` file.
        max_pixels: As :func:`open_image`.
        image: The lazy image to convert, opened sequentially (default: ``path``'s page 0;
            :mod:`imaging.formats` passes an OME-TIFF's full-resolution planes).
        value_range: Float images' ``(lo, hi)`` (see :func:`to_rgb8`); default: computed from
            ``path`` with one extra pass (:func:`float_range`).
        tiff_pages: The TIFF pages of ``path`` that ``image`` is made of, whose deflate
            checksums are verified before the conversion
            (:func:`imaging.integrity.check_deflate_rows`); default: page 0 when ``image`` is
            None (opened here), none when the caller passes an image without naming them.
        significant_bits: Of 16-bit samples (see :func:`to_rgb8`); None: the type's.
        nodata_path: Where to write the no-data mask of an image with an alpha band
            (:func:`alpha_nodata`, :func:`write_nodata`: one more pass over the image, only
            for such images), if any pixel is fully transparent; else no file. Only where
            ``image`` is None (opened here).

    Raises:
        ImageFormatError: unreadable, truncated or corrupt pixel data, or unsupported format.
        OutputWriteError: ``out_path`` cannot be written (disk full, quota, read-only).
        ValueError: ``significant_bits`` outside :data:`SIGNIFICANT_BITS`.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part.tif")
    if tiff_pages is None:
        tiff_pages = (0,) if image is None else ()
    opened = image is None
    image = open_image(path, max_pixels=max_pixels, access="sequential") if opened else image
    if value_range is None and image.format in ("float", "double"):  # one pass for the range
        value_range = float_range(open_image(path, max_pixels=max_pixels))
    try:
        for page in tiff_pages:  # the checksums libtiff skips
            check_deflate_rows(path, 0, image.height, page=page)
        to_rgb8(image, value_range, significant_bits).tiffsave(
            str(tmp), tile=True, tile_width=256, tile_height=256, compression="deflate",
            predictor="horizontal", bigtiff=True, keep="none",
        )
        if nodata_path is not None and opened:  # a second, sequential pass of its own
            nodata = alpha_nodata(open_image(path, max_pixels=max_pixels, access="sequential"),
                                  path)
            if nodata is not None:
                write_nodata(nodata, nodata_path)
    except (pyvips.Error, DeflateDamage) as e:
        tmp.unlink(missing_ok=True)
        raise _failure(e, path, "while converting it", out_path) from e
    os.replace(tmp, out_path)
    return ImageInfo(out_path, image.width, image.height, 3, "uchar", True)


def _failure(e: Exception, source: str | os.PathLike, where: str, written: Path) -> Exception:
    """The error to raise for a libvips failure while ``source`` was read into ``written``:
    :class:`OutputWriteError` where ``written`` could not be written (this machine's disk: full,
    over quota, read-only; the source is not at fault and the task is retried), else
    :class:`ImageFormatError` (pixel data that cannot be decoded: :func:`damaged_message`)."""
    name = Path(source).name
    reason = write_failure(e)
    if reason:
        return OutputWriteError(disk_message(f"{written} (made from {name})", reason, name))
    return ImageFormatError(damaged_message(name, where, e))


def alpha_nodata(image: pyvips.Image, path: str | os.PathLike | None = None
                 ) -> pyvips.Image | None:
    """The no-data mask of an image with an alpha band (grey + alpha, RGBA; not CMYK): a
    1-band image, nonzero where alpha is 0 (fully transparent: a stitched mosaic's empty
    areas); None without an alpha band (lazy), and for a TIFF ``path`` whose extra band is
    not alpha (:func:`extra_band_is_alpha`).
    """
    if image.bands not in (2, 4) or (image.bands == 4 and image.interpretation == "cmyk"):
        return None
    if path is not None and not extra_band_is_alpha(path):
        return None
    return image[image.bands - 1] == 0


def extra_band_is_alpha(path: str | os.PathLike) -> bool:
    """False for a TIFF whose page 0 marks its extra sample (the band after grey or RGB) as
    unspecified data (``ExtraSamples`` 0, TIFF 6.0 section 18: e.g. an infrared channel or a
    camera's own plane), which is not transparency: libvips reads it as a fourth band all the
    same, and taking it for alpha would mark every pixel where it is 0 as no data. True for
    associated (1) or unassociated (2) alpha, for a TIFF without the tag and for other
    formats (a PNG's fourth band is alpha)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            extra = tif.pages[0].extrasamples
    except Exception:  # not a TIFF (or tifffile cannot tell): as libvips reads it
        return True
    return not extra or int(extra[0]) != 0


#: Side (px) of the blocks a mosaic's black fill is found by (:func:`black_fill_nodata`).
BLACK_FILL_BLOCK = 64


def black_fill_nodata(image: pyvips.Image) -> pyvips.Image | None:
    """The no-data mask of a stitched mosaic's black fill: where no field was imaged, stitching
    software without an alpha band (Zeiss ZEN's tile export, Fiji's Grid/Collection
    stitching, MIST) writes black, which a model would otherwise label as some phase and
    every "% of image" count.

    Black = 0 in every band. The fill is the black :data:`BLACK_FILL_BLOCK`-px blocks
    connected (4-connectivity) to a block on the image's border, every pixel of each black
    (a dark field clipped to 0 here and there has no such block: a camera's noise leaves
    some pixel above 0), grown by one block so that the black pixels of the fill's ragged
    edge count too (its 8 neighbours); the mask is the black pixels inside it. Only the
    border's blocks are read unless one of them is black (a tiled image: about
    2 x (W + H) x 256 px); then one pass over the image, and the block map, (H / 64, W / 64),
    in memory.

    Args:
        image: An 8-bit image (the 3-band RGB rows read: a converted source or a model-ready
            one), random access.

    Returns:
        A lazy 1-band uchar image, nonzero where no image covers the pixel; None when no
        black block touches the border.

    Raises:
        pyvips.Error: the image's pixels cannot be decoded.
    """
    b = BLACK_FILL_BLOCK
    w, h = image.width, image.height
    gw, gh = -(-w // b), -(-h // b)
    black = image.bandor() == 0  # 255 where black
    # past the image's right and bottom edges counts as black: a fill there reaches the edge
    lit = (black == 0).cast("float").embed(0, 0, gw * b, gh * b, extend="black")

    def blocks(x: int, y: int, bw: int, bh: int) -> np.ndarray:
        """(bh, bw) bool: the black blocks of the block window at block (x, y)."""
        return lit.crop(x * b, y * b, bw * b, bh * b).shrink(b, b).numpy() == 0

    if not any(blocks(*edge).any() for edge in ((0, 0, gw, 1), (0, gh - 1, gw, 1),
                                                 (0, 0, 1, gh), (gw - 1, 0, 1, gh))):
        return None
    full = blocks(0, 0, gw, gh)
    reach = np.zeros_like(full)
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        reach[edge] = full[edge]
    while True:  # flood through black blocks from the border (reconstruction by dilation)
        grown = _grow(reach) & full
        if (grown == reach).all():
            break
        reach = grown
    near = _grow(reach, diagonal=True).astype(np.uint8) * 255
    zoomed = pyvips.Image.new_from_array(near).zoom(b, b).crop(0, 0, w, h)
    return zoomed & black


def _grow(mask: np.ndarray, diagonal: bool = False) -> np.ndarray:
    """``mask`` (2-D bool) and its 4-neighbours (with ``diagonal``, its 8-neighbours)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    rows = out.copy() if diagonal else mask
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def write_black_fill_nodata(path: str | os.PathLike, nodata_path: str | os.PathLike, *,
                            max_pixels: int) -> bool:
    """Write the no-data mask of the black fill (:func:`black_fill_nodata`) of the 8-bit RGB
    image at ``path`` (a converted source or a model-ready one) to ``nodata_path``
    (:func:`write_nodata`), where it has one.

    Returns:
        True if written; False where the image has no black fill (no file; an old one is
        removed).

    Raises:
        ImageFormatError: unreadable, truncated or corrupt pixel data.
        OutputWriteError: ``nodata_path`` cannot be written (disk full, quota, read-only).
    """
    Path(nodata_path).unlink(missing_ok=True)
    image = open_image(path, max_pixels=max_pixels)
    try:
        mask = black_fill_nodata(image)
        return mask is not None and write_nodata(mask, nodata_path)
    except pyvips.Error as e:
        raise _failure(e, path, "while reading it", Path(nodata_path)) from e


def write_nodata(mask: pyvips.Image, path: str | os.PathLike) -> bool:
    """Write a no-data mask where it marks any pixel: 1 band, uint8, :data:`NODATA` where
    ``mask`` is nonzero, else 0; tiled 256 px, deflate, BigTIFF. ``mask`` is read once, in
    order (a sequential image will do); the written file is then read once for the check.

    Returns:
        True if written, False when no pixel is no-data (no file; an old one is removed).
    """
    path = Path(path)
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.tif")
    try:
        (mask != 0).ifthenelse(NODATA, 0).cast("uchar").tiffsave(
            str(tmp), tile=True, tile_width=256, tile_height=256, compression="deflate",
            bigtiff=True, keep="none")
    except pyvips.Error:  # e.g. the image under the mask cannot be decoded: no part left
        tmp.unlink(missing_ok=True)
        raise
    if pyvips.Image.new_from_file(str(tmp), access="sequential", revalidate=True).max() == 0:
        tmp.unlink()
        return False
    os.replace(tmp, path)
    return True


def count_nodata(path: str | os.PathLike) -> int:
    """Pixels a no-data mask (:func:`write_nodata`) marks (one pass over it).

    Raises:
        ImageFormatError: the mask cannot be read.
    """
    try:
        mask = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="warning",
                                          revalidate=True)
        return round(mask.avg() / NODATA * mask.width * mask.height)
    except pyvips.Error as e:
        raise ImageFormatError(f"{Path(path).name}: the no-data mask cannot be read "
                               f"({_first_line(e)})") from e


def read_nodata_rows(path: str | os.PathLike, r0: int, r1: int) -> np.ndarray:
    """Rows ``[r0, r1)`` of a no-data mask (:func:`write_nodata`): (r1 - r0, W) bool, True
    where no image covers the pixel.

    Raises:
        ImageFormatError: the mask cannot be read.
    """
    try:
        mask = pyvips.Image.new_from_file(str(path), access="random", fail_on="warning",
                                          revalidate=True)
        return mask.crop(0, r0, mask.width, r1 - r0).numpy() > 0
    except pyvips.Error as e:
        raise ImageFormatError(f"{Path(path).name}, rows {r0}-{r1}: the no-data mask cannot be "
                               f"read ({_first_line(e)})") from e


def read_rows(image: pyvips.Image, r0: int, r1: int, *, check_deflate: bool = True) -> np.ndarray:
    """Decode image rows ``[r0, r1)`` as 8-bit RGB.

    Args:
        image: An image from :func:`open_image` (any supported bands/format).
        r0, r1: Row range (px), ``0 <= r0 < r1 <= height``.
        check_deflate: Verify the Adler-32 of the deflate tiles/strips of these rows first
            (:func:`imaging.integrity.check_deflate_rows`, ~11 ns/px on one Zen 2 core);
            False only for files pelletseg wrote and checked itself (a job's converted
            ``source.tif``).

    Returns:
        (r1 - r0, W, 3) uint8 array.

    Raises:
        ImageFormatError: the pixel data of these rows cannot be decoded (truncated/corrupt).
    """
    region = to_rgb8(image).crop(0, r0, image.width, r1 - r0)
    try:
        if check_deflate and (tiff := is_tiff_page0(image)) is not None:
            check_deflate_rows(tiff, r0, r1)  # the checksums libtiff skips (imaging/integrity.py)
        data = region.write_to_memory()
    except (pyvips.Error, DeflateDamage) as e:
        name = Path(image.filename).name if image.get_typeof("filename") else "image"
        raise ImageFormatError(damaged_message(name, f"image rows {r0}-{r1}", e)) from e
    return np.frombuffer(data, dtype=np.uint8).reshape(r1 - r0, image.width, 3)


def image_rows(image: pyvips.Image, *, check_deflate: bool = True):
    """A row reader over a lazy image, for :func:`worker.engine.prefetch.iter_bands`.

    Args:
        image: An image from :func:`open_image` (any supported bands/format).
        check_deflate: As :func:`read_rows`.

    Returns:
        ``rows(lo, hi)`` -> (hi - lo, W, 3) uint8 image rows ``[lo, hi)`` (see
        :func:`read_rows`; raises :class:`ImageFormatError` on corrupt pixel data).
    """

    def rows(lo: int, hi: int) -> np.ndarray:
        return read_rows(image, lo, hi, check_deflate=check_deflate)

    return rows
