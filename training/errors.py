"""Exceptions of training and evaluation. Each message names the file or key and what to do."""

__all__ = ["TrainingError"]


class TrainingError(Exception):
    """Base class of the errors raised by ``training`` (datasets, checkpoints)."""
