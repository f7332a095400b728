"""Exceptions of the worker layer, and which errors are the input's fault. Each message names
the file and what to do about it."""

import pyvips

from core.geometry import GeometryError
from core.spec import SpecError
from imaging.errors import (
    ImageFormatError,
    OutputWriteError,
    disk_message,
    vips_text,
    write_failure,
    written_file,
)
from models.package import ModelPackageError

__all__ = ["PERMANENT_ERRORS", "SourceChangedError", "SourceError", "WorkerError", "describe"]


class WorkerError(Exception):
    """Base class of the errors raised by ``worker`` itself."""


class SourceError(WorkerError):
    """A job's source URL is not allowed, or does not exist."""


class SourceChangedError(SourceError):
    """A job's source is not the file its planner read (``outputs["source_identity"]``): it was
    rewritten or replaced since, so its rows would mix two images."""


#: Errors that are the input's fault: retrying the same row cannot help.
PERMANENT_ERRORS = (ImageFormatError, SourceError, ModelPackageError, GeometryError, SpecError)


def describe(e: BaseException) -> str:
    """One line for a row's or stage's error (``Type: text``): a libvips error's lines joined
    (:func:`imaging.errors.vips_text`, no Python bytes reprs), and a write this machine's disk
    refused (full, over quota, read-only: :func:`imaging.errors.write_failure`) said to be
    that, with the file and the way out, since the input is not at fault."""
    text = vips_text(e) if isinstance(e, pyvips.Error) else str(e)
    reason = None if isinstance(e, OutputWriteError) else write_failure(e)
    if reason:
        text = disk_message(written_file(text) or "a file", reason)
    return f"{type(e).__name__}: {text}"
