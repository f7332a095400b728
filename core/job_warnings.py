"""Job warnings: what a laboratory must read beside a job's results because the input may make
them wrong without failing the job (a pixel size unlike the one the model was trained at; the
bundled demo model given a pellet image; pixels the file records as not square; a stack of
which only the first image was read). The planner
finds them and stores them on the job (``outputs["warnings"]``); the reducer copies them into
``fractions.json``; ``pelletseg run``, the API (``GET /v1/jobs/{id}``), the dashboard's job page
and the batch table show them.

A warning is a JSON object ``{"code": WarningCode, "message": str}``: the code for programs
(stable), the message for people (says what is wrong and what to do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

__all__ = ["WarningCode", "job_warning", "warning_codes", "warning_lines"]


class WarningCode(StrEnum):
    """What a job warning is about."""

    #: The job's pixel size (µm/px) lies outside the range the model was trained at
    #: (:func:`models.suitability.pixel_size_warning`).
    PIXEL_SIZE_UNLIKE_MODEL = "pixel_size_unlike_model"
    #: The job's model is the bundled demo model and its image is not a demo image
    #: (:func:`models.suitability.demo_model_warning`): its labels mean little.
    DEMO_MODEL = "demo_model"
    #: The source holds several images of the read one's size (a TIFF's pages, an OME-TIFF's
    #: Z planes or time points) and the job read only the first
    #: (:attr:`imaging.formats.SourceInfo.planes`).
    PLANES_LEFT_OUT = "planes_left_out"
    #: The source records pixels that are not square, so the job has no pixel size and its
    #: microstructure is in px (:func:`worker.stages.planning.resolve_pixel_size`).
    PIXELS_NOT_SQUARE = "pixels_not_square"
    #: The source asks viewers to show it turned or mirrored (EXIF / TIFF orientation other
    #: than 1); the job segments the pixels as stored, so its outputs are not as a viewer shows
    #: the file (:func:`worker.stages.planning.orientation_message`).
    ORIENTATION_NOT_APPLIED = "orientation_not_applied"


def job_warning(code: WarningCode, message: str) -> dict[str, str]:
    """A warning as stored on the job and in ``fractions.json``: ``{"code", "message"}``."""
    return {"code": WarningCode(code).value, "message": message}


def warning_lines(warnings: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """``"warning: <message>"`` per warning, for text output (``pelletseg run``)."""
    return [f"warning: {w['message']}" for w in warnings or ()]


def warning_codes(warnings: Iterable[Mapping[str, Any]] | None) -> str:
    """The warnings' codes joined by ``;`` (the batch table's column); ``""`` for none."""
    return ";".join(str(w["code"]) for w in warnings or ())
