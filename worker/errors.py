"""Exceptions of the worker layer, and which errors are the input's fault. Each message names
the file and what to do about it."""

from core.geometry import GeometryError
from core.spec import SpecError
from imaging.errors import ImageFormatError
from models.package import ModelPackageError

__all__ = ["PERMANENT_ERRORS", "SourceChangedError", "SourceError", "WorkerError"]


class WorkerError(Exception):
    """Base class of the errors raised by ``worker`` itself."""


class SourceError(WorkerError):
    """A job's source URL is not allowed, or does not exist."""


class SourceChangedError(SourceError):
    """A job's source is not the file its planner read (``outputs["source_identity"]``): it was
    rewritten or replaced since, so its rows would mix two images."""


#: Errors that are the input's fault: retrying the same row cannot help.
PERMANENT_ERRORS = (ImageFormatError, SourceError, ModelPackageError, GeometryError, SpecError)
