"""The worker's log: structlog events through Celery's logging, each at its own level, and
libvips' chatter kept at DEBUG.

Unconfigured, structlog prints to stdout, which a Celery worker redirects to its log at
WARNING (``worker_redirect_stdouts_level``): every ``log.info(...)`` event showed as
``WARNING/MainProcess``. :func:`configure_structlog` sends structlog events to the standard
library logger of their module instead, so Celery's handler writes them with their own level
(``INFO/MainProcess] row.done job=... index=3``) and its ``--loglevel`` filters them.

libvips reports through GLib's ``VIPS`` log domain, which pyvips forwards to the ``pyvips``
logger: at INFO that is one "threadpool completed with N workers" line per pipeline (about 55
per reduce). :func:`quiet_libvips` raises that logger to WARNING unless the worker logs at
DEBUG. :func:`connect` wires both to Celery's ``after_setup_logger`` signal.
"""

from __future__ import annotations

import logging

import structlog
from celery.signals import after_setup_logger

__all__ = ["configure_structlog", "connect", "quiet_libvips", "render"]

#: The logger pyvips forwards libvips' GLib ``VIPS`` log domain to.
LIBVIPS_LOGGER = "pyvips"


def render(_logger, _method: str, event_dict: dict) -> str:
    """structlog's last processor: ``event key=value ...`` (values with spaces quoted)."""
    event = str(event_dict.pop("event", ""))
    parts = [event]
    for key, value in event_dict.items():
        text = str(value)
        parts.append(f"{key}={text!r}" if (" " in text or not text) else f"{key}={text}")
    return " ".join(parts)


def configure_structlog() -> None:
    """Route structlog events to ``logging.getLogger(<module>)`` at their own level (events
    below the logger's effective level are dropped before they are rendered)."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            render,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def quiet_libvips(level: int | str) -> None:
    """libvips' INFO lines (threadpool sizes, vector paths) only when ``level`` is DEBUG;
    its warnings and errors always."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    logging.getLogger(LIBVIPS_LOGGER).setLevel(
        logging.DEBUG if isinstance(level, int) and level <= logging.DEBUG else logging.WARNING)


def _after_setup_logger(logger=None, loglevel=None, **_) -> None:
    configure_structlog()
    quiet_libvips(loglevel if loglevel is not None else logging.INFO)


def connect() -> None:
    """Configure the worker's logging once Celery has set up its own (``after_setup_logger``,
    sent in the worker process before it consumes)."""
    after_setup_logger.connect(_after_setup_logger, weak=False,
                               dispatch_uid="pelletseg-worker-logs")
