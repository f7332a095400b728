"""Exceptions of imaging. Each message names the file and what to do about it."""

__all__ = ["ImageFormatError"]


class ImageFormatError(Exception):
    """The source is not a readable image, or has a size, band count or bit depth pelletseg
    cannot convert to 8-bit RGB; or a row checkpoint or label map is not the uint8 image it
    should be. A job fails with this message; nothing is retried."""
