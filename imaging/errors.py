"""Exceptions of imaging. Each message names the file and what to do about it; paths are shown
as text (:func:`error_text`), never as Python ``b'...'`` bytes."""

from __future__ import annotations

import ast
import re

__all__ = ["ImageFormatError", "error_text"]

#: A Python bytes literal as ``str(bytes)`` writes it (pyvips puts file names in its messages so).
_BYTES_LITERAL = re.compile(r"""\bb('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


class ImageFormatError(Exception):
    """The source is not a readable image, or has a size, band count or bit depth pelletseg
    cannot convert to 8-bit RGB; or a row checkpoint or label map is not the uint8 image it
    should be. A job fails with this message; nothing is retried."""


def _decode(match: re.Match) -> str:
    try:
        value = ast.literal_eval("b" + match.group(1))
    except (ValueError, SyntaxError):
        return match.group(1)[1:-1]
    return value.decode("utf-8", errors="replace")


def error_text(error: BaseException | str) -> str:
    """The message of ``error`` for people: every ``b'...'`` bytes literal in it (as libvips
    errors raised by pyvips show file names) replaced by its UTF-8 text, surrounding spaces
    and blank lines trimmed.

    Example: ``unable to load from file b'/data/a b.tif'`` -> ``unable to load from file
    /data/a b.tif``.
    """
    return _BYTES_LITERAL.sub(_decode, str(error)).strip()
