"""Exceptions of the storage layer (job table and blob store). Callers catch these, never
fsspec's or SQLAlchemy's."""

__all__ = [
    "BlobNotFoundError",
    "InvalidKeyError",
    "NotFoundError",
    "StorageError",
    "TransitionError",
    "UploadError",
    "UploadStateError",
]


class StorageError(Exception):
    """Base class for every error raised by ``storage``."""


class BlobNotFoundError(StorageError):
    """A blob key does not exist in the store."""


class InvalidKeyError(StorageError, ValueError):
    """A blob key is empty, absolute, or would escape the store root (``..``)."""


class TransitionError(StorageError):
    """A state transition is not allowed by the job or row state machine."""


class NotFoundError(StorageError):
    """A job, row or model record does not exist."""


class UploadError(StorageError, ValueError):
    """An upload request or part is invalid (file name, size, part number, part length)."""


class UploadStateError(UploadError):
    """An upload is not in the state the operation needs (e.g. not complete yet, or its parts
    go to presigned S3 URLs and not through the API)."""
