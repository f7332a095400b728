"""Exceptions of the worker layer. Each message names the file and what to do about it."""


class WorkerError(Exception):
    """Base class for every error raised by ``worker``."""


class ImageFormatError(WorkerError):
    """The source is not a readable image, or has a size, band count or bit depth pelletseg
    cannot convert to 8-bit RGB. The job fails with this message; nothing is retried."""


class SourceError(WorkerError):
    """A job's source URL is not allowed, or does not exist."""


class ModelPackageError(WorkerError):
    """A model package is missing, malformed, or its weights do not match their sha256."""


class GeometryError(WorkerError, ValueError):
    """Tile geometry parameters are inconsistent (e.g. halo too large for the tile)."""


#: Errors that are the input's fault: retrying the same row cannot help.
PERMANENT_ERRORS = (ImageFormatError, SourceError, ModelPackageError, GeometryError)
