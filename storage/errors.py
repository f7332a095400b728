"""Exceptions of the storage layer. Callers catch these, never fsspec's or SQLAlchemy's."""


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


class SpecError(StorageError, ValueError):
    """A job spec is invalid or has a version this code cannot read."""
