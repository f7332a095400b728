"""One entry point for every supported source format: what it is (:func:`source_info`), its
pixel size (:func:`source_pixel_size_um`), its conversion to the model-ready tiled 8-bit
RGB TIFF (:func:`write_model_ready`; in memory: :func:`read_rgb8`) and the check that a
16-bit source was not converted into a nearly black image (:func:`check_bit_depth`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from core.sources import BFCONVERT
from imaging.errors import DarkSourceError, ImageFormatError
from imaging.formats.bands import BandSource, rgb8_bands, value_range, write_bands_model_ready
from imaging.formats.detect import SUPPORTED, sniff_format
from imaging.formats.ometiff import ome_layout, ome_scenes, open_ome
from imaging.integrity import DeflateDamage, check_deflate_rows, damaged_message
from imaging.reading import (
    SAMPLE_BITS,
    SIGNIFICANT_BITS,
    ImageInfo,
    check_image,
    float_range,
    image_info,
    open_image,
    require_file,
    significant_bits_of,
    to_rgb8,
    write_black_fill_nodata,
)
from imaging.reading import write_model_ready as write_libvips_model_ready

#: libvips band format -> numpy dtype name.
NUMPY_DTYPE = {"uchar": "uint8", "ushort": "uint16", "short": "int16", "float": "float32",
               "double": "float64", "char": "int8", "uint": "uint32", "int": "int32"}


@dataclass(frozen=True)
class SourceInfo:
    """Header facts of a source image of any supported format.

    Attributes:
        path: Local file.
        format: As named by :func:`imaging.formats.detect.sniff_format` (``TIFF``,
            ``OME-TIFF``, ``CZI``, ``OpenSlide:aperio``, ...).
        width, height: Size of the full-resolution image (px).
        bands: Samples per pixel.
        dtype: numpy dtype name of the samples (``uint8``, ``uint16``, ``int16``, ``float32``).
        pixel_size_um: Pixel size from the file's metadata (µm/px), or None.
        tiled: True when rows can read the file directly (tiled TIFF, page 0).
        significant_bits: Significant bits per sample the file records (OME-XML
            ``SignificantBits``, CZI ``ComponentBitCount``, a TIFF's ``MaxSampleValue``), or
            None (PNG, JPEG, slides and most TIFFs record none).
        scene: The OME Image read (0-based index in the file) of an OME-TIFF; None for
            other formats.
        planes: How many images of the read one's size the file holds where a job reads only
            the first: a plain TIFF's same-size pages (of the first :data:`PAGES_CHECKED`), an
            OME-TIFF Image's or a CZI's Z planes x time points; 1 for the other formats.
        orientation: The EXIF / TIFF orientation (1-8) a JPEG, PNG, WebP or plain TIFF asks
            viewers to show it in (:attr:`imaging.reading.ImageInfo.orientation`); 1 where
            none is recorded and for the microscope formats. Jobs read the pixels as stored.
        compression: The TIFF ``Compression`` tag of the page a (plain or OME-) TIFF is read
            from (1 none, 5 LZW, 7 JPEG, 8 deflate, 34712 JPEG 2000, 50000 ZSTD, ...); None
            for the other formats and where tifffile cannot tell.
    """

    path: Path
    format: str
    width: int
    height: int
    bands: int
    dtype: str
    pixel_size_um: float | None
    tiled: bool
    significant_bits: int | None = None
    scene: int | None = None
    planes: int = 1
    orientation: int = 1
    compression: int | None = None

    def significant_bits_used(self, given: int | None = None) -> int | None:
        """The significant bits the conversion of this source uses, ``given`` with the job
        or not (:func:`imaging.reading.significant_bits_of`): None unless it is 16-bit.

        Raises:
            ValueError: ``given`` outside 8-16.
        """
        return significant_bits_of(given, self.significant_bits, self.dtype)

    @property
    def planes_text(self) -> str:
        """:attr:`planes` as a message gives it: ``"256+"`` where a plain TIFF's count
        stopped at :data:`PAGES_CHECKED` pages, else the number."""
        capped = self.format in ("TIFF", "BigTIFF") and self.planes >= PAGES_CHECKED
        return f"{self.planes}+" if capped else str(self.planes)

    @property
    def is_model_ready(self) -> bool:
        """True if rows can read this file directly: a tiled 8-bit 3-band TIFF (page 0) in a
        compression every libtiff decodes (:data:`BUILTIN_COMPRESSIONS`); any other is
        converted at planning, where a compression this libtiff lacks fails the job once,
        saying so (:func:`imaging.integrity.damaged_message`), rather than every row."""
        return (self.tiled and self.bands == 3 and self.dtype == "uint8"
                and self.compression in BUILTIN_COMPRESSIONS)


#: TIFF ``Compression`` values every libtiff build decodes (none, LZW, JPEG, deflate in both
#: codes, PackBits); others (ZSTD, WebP, LZMA, LERC) depend on how libtiff was built, and
#: JPEG 2000, JPEG XL and JPEG XR are not in libtiff at all.
BUILTIN_COMPRESSIONS = frozenset({1, 5, 7, 8, 32946, 32773})


def _check_size(name: str, width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ImageFormatError(f"{name}: image has zero size ({width} x {height} px)")
    if width * height > max_pixels:
        raise ImageFormatError(
            f"{name}: {width} x {height} px = {width * height:,} px exceeds the limit of "
            f"{max_pixels:,} px (PELLETSEG_MAX_PIXELS); split the image or raise the limit if "
            "it is genuine"
        )


#: What to do with a microscope's own format pelletseg does not read (:data:`core.sources.
#: BFCONVERT`).
CONVERT_HINT = ("If it is a microscope's own format (Olympus/Evident .vsi, Leica .lif, Nikon "
                f".nd2, Imaris .ims, ...), {BFCONVERT}")


def _kind(path: Path) -> str:
    require_file(path)
    if path.suffix.lower() == ".vsi":  # a TIFF by its first bytes: read as one, the preview
        raise ImageFormatError(
            f"{path.name}: an Olympus/Evident cellSens VSI file, whose TIFF holds only a "
            f"preview; the micrograph's pixels are in the .ets files of its folder "
            f"_{path.stem}_/, which pelletseg does not read. Convert it to OME-TIFF with "
            f"Bio-Formats' bfconvert (`bfconvert -series 0 -compression LZW {path.name} "
            f"{path.stem}.ome.tif`, with the folder beside it; `showinf -nopix` lists the "
            "series, the full-resolution scan usually first) and submit that")
    kind = sniff_format(path)
    if kind is None:
        raise ImageFormatError(
            f"{path.name}: not a readable image (its first bytes match no format pelletseg "
            f"reads); pelletseg reads {SUPPORTED}. {CONVERT_HINT}"
        )
    return kind


def _by_bands(kind: str) -> bool:
    """True for the formats read band by band (CZI, OpenSlide), not by libvips."""
    return kind == "CZI" or kind.startswith("OpenSlide:")


@contextmanager
def _band_source(path: Path, kind: str, max_pixels: int | None = None) -> Iterator[BandSource]:
    """:func:`open_band_source`, its size checked against ``max_pixels`` (if given), closed
    on the way out."""
    source = open_band_source(path, kind)
    try:
        if max_pixels is not None:
            _check_size(path.name, source.width, source.height, max_pixels)
        yield source
    finally:
        source.close()


def _ome_image(path: Path, max_pixels: int, access: str = "random", scene: int | None = None):
    """``(layout, image)`` of an OME-TIFF's full-resolution planes (of Image ``scene`` when
    given), size and pixel format checked."""
    layout = ome_layout(path, scene)
    _check_size(path.name, layout.width, layout.height, max_pixels)
    image = open_ome(path, layout, access=access)
    check_image(image, path.name, max_pixels=max_pixels)
    return layout, image


def open_band_source(path: str | os.PathLike, kind: str | None = None) -> BandSource:
    """A row-band reader for a CZI or OpenSlide file (the caller closes it).

    Raises:
        ImageFormatError: the format is not read by bands, or the file cannot be opened.
    """
    path = Path(path)
    kind = kind or _kind(path)
    if kind == "CZI":
        from imaging.formats.czi import CziSource

        return CziSource(path)
    if kind.startswith("OpenSlide:"):
        from imaging.formats.slide import SlideSource

        return SlideSource(path)
    raise ImageFormatError(f"{path.name}: a {kind} file is read by libvips, not by bands")


def source_info(path: str | os.PathLike, *, max_pixels: int,
                scene: int | None = None) -> SourceInfo:
    """Header of a source of any supported format (decodes no pixels); of an OME-TIFF, the
    Image ``scene`` when given (:func:`imaging.formats.ometiff.ome_layout`).

    Raises:
        ImageFormatError: missing, empty, not a supported format (the message lists them),
            corrupt header, too large, an unsupported band count / bit depth, a plain
            TIFF whose page 0 is smaller than a later page (a thumbnail first), an OME-TIFF
            of several scenes without ``scene`` or without that scene, or ``scene`` given
            for a file of another format.
    """
    path = Path(path)
    kind = _kind(path)
    if scene is not None and kind != "OME-TIFF":
        raise ImageFormatError(
            f"{path.name}: a {kind} file; a scene (here {scene}) is chosen only in OME-TIFFs "
            "of several images (a CZI is read as the mosaic of all its scenes): leave the "
            "scene out for this file")
    if _by_bands(kind):
        with _band_source(path, kind, max_pixels) as source:
            return SourceInfo(path, kind, source.width, source.height, source.bands,
                              source.dtype, source.pixel_size_um, False, source.significant_bits,
                              planes=source.planes)
    if kind == "OME-TIFF":
        layout, image = _ome_image(path, max_pixels, scene=scene)
        tiled = layout.pages == (0,) and image.get_typeof("tile-width") != 0
        return SourceInfo(path, kind, image.width, image.height, image.bands,
                          NUMPY_DTYPE.get(image.format, image.format), layout.pixel_size_um, tiled,
                          layout.significant_bits, layout.series, layout.planes,
                          compression=layout.compression)
    if kind not in ("TIFF", "BigTIFF"):
        info: ImageInfo = image_info(path, max_pixels=max_pixels)
        return SourceInfo(path, kind, info.width, info.height, info.bands,
                          NUMPY_DTYPE.get(info.format, info.format), None, info.tiled,
                          orientation=info.orientation)
    bits, planes, compression = _plain_tiff_pages(path)  # first: its refusals say more
    info = image_info(path, max_pixels=max_pixels)
    return SourceInfo(path, kind, info.width, info.height, info.bands,
                      NUMPY_DTYPE.get(info.format, info.format), tiff_pixel_size_um(path),
                      info.tiled, bits, planes=planes, orientation=info.orientation,
                      compression=compression)


#: Top-level pages of a plain TIFF compared with page 0 (a Z-stack of thousands is not read
#: whole for this).
PAGES_CHECKED = 256


#: TIFF PhotometricInterpretation values of CIE L*a*b* colour (CIELab, ICCLab, ITULab).
CIELAB = (8, 9, 10)


def _plain_tiff_pages(path: Path) -> tuple[int | None, int, int | None]:
    """One tifffile pass over a plain TIFF's pages: refuse the file when page 0 (what libvips
    reads, and so every job) has fewer pixels than a later full-resolution page (page 0 is then
    a thumbnail or overview, and a job would segment it instead of the micrograph;
    reduced-resolution and mask pages, ``NewSubfileType`` bits 1 and 4, are not compared), and
    return page 0's significant bits (:func:`_max_sample_bits`) and how many of the first
    :data:`PAGES_CHECKED` full-resolution pages have page 0's size (1: page 0 alone; more: a
    stack of which jobs read the first) and page 0's ``Compression`` tag. A TIFF tifffile
    cannot parse passes with ``(None, 1, None)`` (libvips says what is wrong with it).

    Raises:
        ImageFormatError: a thumbnail-first TIFF (names both pages' sizes and what to do), or
            one in CIE L*a*b* colour (:data:`CIELAB`), which libvips reads as damaged.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            first = tif.pages[0]
            photometric, compression = int(first.photometric), int(first.compression)
            bits = _max_sample_bits(first)
            largest = (first.imagewidth * first.imagelength, 0, first)
            planes = 1
            for index in range(1, min(len(tif.pages), PAGES_CHECKED)):
                page = tif.pages[index]
                if getattr(page, "subfiletype", 0) & 0b101:  # reduced resolution, mask
                    continue
                area = page.imagewidth * page.imagelength
                planes += (page.imagewidth, page.imagelength) == (first.imagewidth,
                                                                  first.imagelength)
                if area > largest[0]:
                    largest = (area, index, page)
    except Exception:  # damaged: libvips' own reading of page 0 reports it
        return None, 1, None
    if photometric in CIELAB:
        raise ImageFormatError(
            f"{path.name}: a TIFF in CIE L*a*b* colour (PhotometricInterpretation "
            f"{photometric}), which pelletseg does not convert; save the micrograph as RGB or "
            "grey (as the microscope's camera gave it)")
    _, index, page = largest
    if index:
        raise ImageFormatError(
            f"{path.name}: page 0 of this TIFF is {first.imagewidth} x {first.imagelength} px "
            f"but page {index} is {page.imagewidth} x {page.imagelength} px; pelletseg reads "
            "page 0, here a thumbnail or overview rather than the micrograph: save the "
            "micrograph alone (one page), or as OME-TIFF (whose largest image is read)"
        )
    return bits, planes, compression


def _max_sample_bits(page) -> int | None:
    """Significant bits of a 16-bit tifffile page from its ``MaxSampleValue`` tag (281, "the
    maximum component value used", TIFF 6.0): 4095 gives 12, 16383 gives 14; None without the
    tag, for 8-bit pages, or for 65535 (all 16). Raises what tifffile raises on a damaged
    tag."""
    tag = page.tags.get(281)
    if tag is None or page.bitspersample != 16:
        return None
    value = tag.value
    top = int(max(value) if isinstance(value, tuple | list) else value)
    return top.bit_length() if 255 < top < 65535 else None


def tiff_pixel_size_um(path: str | os.PathLike) -> float | None:
    """Pixel size (µm/px) from a TIFF's resolution tags or OME-XML, by the one rule of
    :func:`imaging.metadata.read_pixel_size_um` (which ignores the defaults of 300 dpi
    and below, in inches or centimetres, that carry no calibration); None when the file does not say."""
    from imaging.metadata import read_pixel_size_um

    try:
        found = read_pixel_size_um(path)
    except Exception:
        return None
    return None if found is None else float(found[0])


def source_scenes(path: str | os.PathLike) -> list[int]:
    """The scenes a job may be given for ``path`` (``--scene``): an OME-TIFF's images of
    similar size, 0-based in file order (:func:`imaging.formats.ometiff.ome_scenes`; one for a
    file of one image); ``[]`` for the other formats (one image each; a CZI is read as the
    mosaic of all its scenes).

    Raises:
        ImageFormatError: missing, not a supported format, or a corrupt OME-TIFF header.
    """
    path = Path(path)
    return ome_scenes(path) if _kind(path) == "OME-TIFF" else []


def source_pixel_size_um(path: str | os.PathLike) -> float | None:
    """Pixel size (µm/px) from the metadata of a source of any supported format: OME-XML
    ``PhysicalSizeX``, CZI ``Scaling``, OpenSlide ``openslide.mpp-x``, TIFF resolution tags;
    None when the file does not say.

    Raises:
        ImageFormatError: not a supported format, or a corrupt header.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "OME-TIFF":
        return ome_layout(path).pixel_size_um
    if _by_bands(kind):
        with _band_source(path, kind) as source:
            return source.pixel_size_um
    if kind in ("TIFF", "BigTIFF"):
        return tiff_pixel_size_um(path)
    return None


def write_model_ready(path: str | os.PathLike, out_path: str | os.PathLike, *, max_pixels: int,
                      significant_bits: int | None = None,
                      nodata_path: str | os.PathLike | None = None,
                      scene: int | None = None) -> ImageInfo:
    """Convert a source of any supported format into the tiled (256 px), deflate 8-bit RGB
    BigTIFF that rows read, streaming (libvips) or band by band (CZI, OpenSlide), by the
    bit-depth rules of :mod:`imaging.reading`; a 16-bit source that nothing describes and that
    the high byte leaves nearly black is refused after the conversion (:func:`check_bit_depth`,
    one pass over ``out_path``; nothing is left at ``out_path`` or ``nodata_path``).

    Args:
        significant_bits: Of 16-bit samples, given with the job (8-16); None: what the file
            records, else the type's (:meth:`SourceInfo.significant_bits_used`, on the
            header :func:`source_info` reads here).
        nodata_path: Where to write the source's no-data mask (:func:`imaging.reading.
            write_nodata`: :data:`imaging.reading.NODATA` where no image covers a pixel: a
            CZI mosaic's empty areas, a slide's or an image's fully transparent ones, else a
            stitched mosaic's black fill, :func:`imaging.reading.black_fill_nodata`, one more
            look at the converted image), when it has any; else no file is left there.
        scene: Of an OME-TIFF of several images, the one to convert (as :func:`source_info`).

    Returns:
        The header of ``out_path``.

    Raises:
        ImageFormatError: as :func:`source_info`, corrupt pixel data, or a 16-bit source
            refused by :func:`check_bit_depth`.
        OutputWriteError (an ``OSError``, as the band writers' own): ``out_path`` cannot be
            written (disk full, quota, read-only): not the source's fault.
        ValueError: ``significant_bits`` outside 8-16.
    """
    path, out_path = Path(path), Path(out_path)
    info = source_info(path, max_pixels=max_pixels, scene=scene)
    bits = info.significant_bits_used(significant_bits)
    if nodata_path is not None:  # a mask left by an earlier conversion is not this one's
        Path(nodata_path).unlink(missing_ok=True)
    if _by_bands(info.format):
        with _band_source(path, info.format, max_pixels) as source:
            write_bands_model_ready(source, out_path, bits, nodata_path=nodata_path)
        written = ImageInfo(out_path, info.width, info.height, 3, "uchar", True)
    elif info.format == "OME-TIFF":
        layout, image = _ome_image(path, max_pixels, access="sequential", scene=info.scene)
        value_range = None
        if image.format in ("float", "double"):
            value_range = float_range(open_ome(path, layout))
        written = write_libvips_model_ready(path, out_path, max_pixels=max_pixels, image=image,
                                            value_range=value_range, tiff_pages=layout.pages,
                                            significant_bits=bits)
    else:
        written = write_libvips_model_ready(path, out_path, max_pixels=max_pixels,
                                            significant_bits=bits, nodata_path=nodata_path)
    try:
        check_bit_depth(info, out_path, significant_bits)
        if nodata_path is not None and not Path(nodata_path).exists():
            write_black_fill_nodata(out_path, nodata_path, max_pixels=max_pixels)
    except ImageFormatError:
        out_path.unlink(missing_ok=True)
        if nodata_path is not None:
            Path(nodata_path).unlink(missing_ok=True)
        raise
    return written


#: The option that gives a job its significant bits, as the refusal of
#: :func:`check_bit_depth` names it (the CLI offers it instead of a resume).
SIGNIFICANT_BITS_OPTION = "--significant-bits"

#: A 16-bit source converted by all its type's bits (16 unsigned, 15 signed) is refused when
#: its samples fit in this many bits or fewer and neither the job nor the file says its
#: significant bits: it is a 12-bit (or 10-bit) camera's image, not a 16-bit one at 1/16 (a
#: signed one: 1/8) of full brightness or less. Its converted brightest value is then at most
#: 15 of 255 (unsigned) or 31 (signed).
DARK_BITS = 12


def check_bit_depth(info: SourceInfo, converted: str | os.PathLike, given: int | None) -> None:
    """Refuse a 16-bit source whose conversion by all its type's bits left it nearly black.

    Only where nothing says the significant bits (``given`` with the job is None, and the
    file records none in :data:`imaging.reading.SIGNIFICANT_BITS`), so the conversion used
    the type's (16 unsigned, 15 signed: :data:`imaging.reading.SAMPLE_BITS`): the brightest
    value of ``converted`` (the 8-bit model-ready TIFF, one pass over it) must show samples
    of more than :data:`DARK_BITS` bits. Otherwise the model would see a field at 1/16 (a
    signed source: 1/8) of its brightness or less and label it as nothing: the job fails
    saying which option to give.

    Raises:
        DarkSourceError: such a source (the message names ``--significant-bits``; its
            ``camera_bits`` the rerun to offer).
        pyvips.Error: ``converted`` cannot be read.
    """
    if not _nothing_says_the_bits(info, given):
        return
    # revalidate: a file written again at the same path must not come from libvips' cache
    brightest = int(pyvips.Image.new_from_file(str(converted), access="sequential",
                                               revalidate=True).max())
    _refuse_if_dark(info, brightest)


def _nothing_says_the_bits(info: SourceInfo, given: int | None) -> bool:
    """True for a 16-bit source (unsigned or signed) whose significant bits neither the job
    (``given``) nor the file (a number in :data:`imaging.reading.SIGNIFICANT_BITS`) says."""
    return (given is None and info.dtype in SAMPLE_BITS
            and info.significant_bits not in SIGNIFICANT_BITS)


def _refuse_if_dark(info: SourceInfo, brightest: int) -> None:
    """Raise the refusal of :func:`check_bit_depth` when the converted image's brightest
    value (of 255) shows samples of at most :data:`DARK_BITS` bits."""
    shift = SAMPLE_BITS[info.dtype] - 8  # the conversion's: v >> shift
    bits = shift + brightest.bit_length()  # the fewest bits the samples fit in
    if bits > DARK_BITS:
        return
    kind = "16-bit" if info.dtype == "uint16" else "signed 16-bit"
    raise DarkSourceError(
        f"{info.path.name}: a {kind} image whose samples all fit in {bits} bits, and the file "
        f"does not say how many its camera fills; read as {kind} it is nearly black (its "
        f"brightest pixel {brightest} of 255) and its labels would mean nothing. Submit it "
        f"again with its camera's significant bits (at least {bits}; 12 for a 12-bit camera): "
        f"{SIGNIFICANT_BITS_OPTION} N on pelletseg run or submit, 'Camera bits' on the dashboard, "
        f"significant_bits in the API (16 converts it as it is)", bits)


def read_rgb8(path: str | os.PathLike, *, max_pixels: int,
              significant_bits: int | None = None) -> np.ndarray:
    """A whole source of any supported format as (H, W, 3) uint8 RGB, in memory, converted
    exactly as a job's rows see it (:func:`write_model_ready`'s rules: bit depths, significant
    bits, bands; deflate checksums verified; :func:`check_bit_depth`'s refusal): for images
    that fit in memory, e.g. training and evaluation data (``training.datasets``), so a
    model learns from the inputs its jobs will give it.

    Args:
        path: Source file.
        max_pixels: Largest accepted width x height.
        significant_bits: Of 16-bit samples (8-16), as a job's; None: what the file records,
            else the type's.

    Returns:
        (H, W, 3) uint8 array.

    Raises:
        ImageFormatError: as :func:`source_info`; truncated or corrupt pixel data; a 16-bit
            source that nothing describes and that the high byte leaves nearly black.
        ValueError: ``significant_bits`` outside 8-16.
    """
    path = Path(path)
    info = source_info(path, max_pixels=max_pixels)
    bits = info.significant_bits_used(significant_bits)  # refuses a number outside 8-16
    try:
        if _by_bands(info.format):
            with _band_source(path, info.format, max_pixels) as source:
                rgb = np.concatenate(list(rgb8_bands(source, value_range(source), bits)))
        else:
            if info.format == "OME-TIFF":
                layout, image = _ome_image(path, max_pixels)
                pages = layout.pages
            else:
                image, pages = open_image(path, max_pixels=max_pixels), (0,)
            for page in pages:  # the checksums libtiff skips
                check_deflate_rows(path, 0, image.height, page=page)
            rng = float_range(image) if image.format in ("float", "double") else None
            rgb = to_rgb8(image, rng, bits).numpy()
    except (pyvips.Error, DeflateDamage) as e:
        raise ImageFormatError(damaged_message(path.name, "while reading it", e)) from e
    if _nothing_says_the_bits(info, significant_bits):
        _refuse_if_dark(info, int(rgb.max()))
    return rgb
