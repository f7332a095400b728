"""Exceptions of imaging. Each message names the file and what to do about it."""

import ast
import re

import pyvips
import pyvips.error

__all__ = ["DarkSourceError", "ImageFormatError", "OutputWriteError", "SeveralScenesError",
           "clear_vips_errors", "disk_message", "vips_text", "write_failure",
           "written_file"]


class ImageFormatError(Exception):
    """The source is not a readable image, or has a size, band count or bit depth pelletseg
    cannot convert to 8-bit RGB; or a row checkpoint or label map is not the uint8 image it
    should be. A job fails with this message; nothing is retried."""


class DarkSourceError(ImageFormatError):
    """A 16-bit source (unsigned or signed) that nothing describes and that its conversion by
    all its type's bits leaves nearly black: a camera of fewer bits
    (:func:`imaging.formats.check_bit_depth`).

    Attributes:
        bits: The fewest significant bits its samples fit in (a job given at least these, the
            camera's, reads it at its brightness).
    """

    def __init__(self, message: str, bits: int):
        super().__init__(message)
        self.bits = int(bits)

    @property
    def camera_bits(self) -> int:
        """The usual camera depth (8, 10, 12, 14 or 16 bits) that holds :attr:`bits`: what a
        rerun of the job is offered."""
        return next(b for b in (8, 10, 12, 14, 16) if b >= self.bits)


class SeveralScenesError(ImageFormatError):
    """An OME-TIFF of several images of similar size (scenes) given without a scene: a job
    would read one and leave the others out.

    Attributes:
        scenes: The scenes (OME Image indices, 0-based, in file order) a job may be given.
    """

    def __init__(self, message: str, scenes: list[int]):
        super().__init__(message)
        self.scenes = list(scenes)


class OutputWriteError(OSError):
    """A file this machine writes (a converted source, a download) could not be written: its
    disk is full, over quota or read-only. Not the source's fault, so not a job's end: the
    task is retried (on another worker, or once space is freed)."""


#: Why the OS refused a write, as libvips and the OS word it (``system error: No space left on
#: device``), and libvips' and libtiff's words for a failed write (``/x/source.tif: write
#: error``, ``wbuffer_write: write failed``, ``Write error at scanline N``).
_DISK_REFUSED = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system",
                           re.IGNORECASE)
_WRITE_FAILED = re.compile(r"\bwrite (?:error|failed)\b", re.IGNORECASE)
#: The file libvips names in a write error (``/x/out/preview.png: write error``).
_WRITTEN = re.compile(r"(\S+): write error")


def disk_message(what: str, reason: str, blameless: str = "the input") -> str:
    """The one wording of a write this machine's disk refused: ``what`` (the file, or what was
    being written) "cannot be written (``reason``)", that the disk is full, over quota or
    read-only, that ``blameless`` is not at fault, and what to do."""
    return (f"{what} cannot be written ({reason}): this machine's disk is full, over quota or "
            f"read-only, and {blameless} is not at fault; free space in PELLETSEG_CACHE_DIR or "
            "give the worker a larger disk")


def written_file(text: str) -> str | None:
    """The file a libvips write error (as text: :func:`vips_text`) names, or None."""
    found = _WRITTEN.search(text)
    return found.group(1) if found else None


def write_failure(e: BaseException) -> str | None:
    """Why a libvips (or OS) error says a file could not be *written* (the machine's disk:
    full, over quota, read-only; never the input's fault): the OS's reason where it gives one,
    else ``"write error"``; None for any other error (e.g. pixel data that cannot be decoded).
    """
    text = str(e)
    refused = _DISK_REFUSED.search(text)
    if refused:
        return refused.group(0)
    return "write error" if _WRITE_FAILED.search(text) else None


_BYTES_REPR = re.compile(r"(?<!\w)b'((?:[^'\\]|\\.)*)'" + r'|(?<!\w)b"((?:[^"\\]|\\.)*)"')


def _decoded(match: re.Match) -> str:
    """The text of one bytes literal (escapes and UTF-8 decoded), or the literal as it is."""
    try:
        return ast.literal_eval(match.group(0)).decode("utf-8", errors="replace")
    except (ValueError, SyntaxError):
        return match.group(0)


def vips_text(e: BaseException, *, first_line: bool = False) -> str:
    """A libvips (pyvips) error as text for a message: pyvips writes file names as Python
    bytes (``unable to load from file b'/data/x.tif'``), which a job error must show as the
    path itself (``/data/x.tif``); lines are stripped, empty ones dropped.

    Args:
        first_line: Only the first line (pyvips' summary), else every line joined by ``"; "``.
    """
    text = _BYTES_REPR.sub(_decoded, str(e))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    return lines[0] if first_line else "; ".join(lines)


def _lenient_to_string(x) -> str:
    """pyvips' ``_to_string`` (a C string from libvips as text) with the bytes that are not
    UTF-8 written as ``\\xNN`` escapes instead of raising."""
    if x == pyvips.ffi.NULL:
        return "NULL"
    text = pyvips.ffi.string(x)
    return text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else text


def _decode_vips_errors_leniently() -> None:
    """Make every :class:`pyvips.Error` constructible whatever bytes libvips' error buffer holds.

    ``pyvips.Error.__init__`` (pyvips 3.2, as since 2.0) decodes libvips' process-wide error
    buffer as strict UTF-8 and clears it only afterwards. libvips quotes file contents and
    names in its messages (``matrixload: bad number "\\xa9"``; a Latin-1 file name), so one
    such byte makes that error, and every later one in the process, a UnicodeDecodeError that
    passes through the ``except pyvips.Error`` handlers: one worker process would fail every
    later job in which libvips reports anything (upstream: libvips/pyvips#80, closed without a
    fix for this case). Replacing the decoder ``pyvips.error`` looks up at call time keeps
    valid UTF-8 as it was. Called once at import of :mod:`imaging.errors` (which
    ``imaging`` imports first).
    """
    if getattr(pyvips.error, "_to_string", None) is not _lenient_to_string:
        pyvips.error._to_string = _lenient_to_string


def clear_vips_errors() -> None:
    """Empty libvips' process-wide error buffer.

    libvips appends to it even from calls that succeed (a loader probing a file it does not
    read) and pyvips clears it only when it raises, so without this a worker's next
    :class:`pyvips.Error` would carry text left by an earlier job, another user's file names
    included. The worker calls it at the start of every task (``worker.tasks``), the API's
    viewer before it opens a layer (``api.viewer.layers``).
    """
    pyvips.vips_lib.vips_error_clear()


_decode_vips_errors_leniently()
