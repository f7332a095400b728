"""The rich consoles of the ``pelletseg`` commands.

On a terminal rich wraps at the terminal's width. Piped into a file, a pager or a CI log, a
default rich console wraps at 80 columns, which broke file URLs in the middle and wrapped
table titles; :func:`make_console` then neither wraps lines (``soft_wrap``) nor narrows
tables (a width of :data:`PIPE_WIDTH` columns, unless ``COLUMNS`` is set). Markup is off:
values such as paths, S3 URLs and error messages may hold brackets (``scan[1].tif``) that
rich would otherwise read as styles and drop; styles are given with ``style=`` or
:class:`rich.text.Text` instead.
"""

from __future__ import annotations

import os
from typing import IO

from rich.console import Console

__all__ = ["PIPE_WIDTH", "make_console"]

#: Width (columns) of a console whose output is not a terminal and ``COLUMNS`` is unset: wide
#: enough that no line or table of pelletseg's is wrapped.
PIPE_WIDTH = 1000


def make_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A console for command output: markup off; no wrapping when not writing to a terminal.

    Args:
        file: Where to write (default ``sys.stdout``, or ``sys.stderr`` with ``stderr``).

    Returns:
        The console; on a terminal it behaves like rich's default one.
    """
    console = Console(file=file, stderr=stderr, markup=False)
    if not console.is_terminal:
        console.soft_wrap = True
        if "COLUMNS" not in os.environ:
            console.width = PIPE_WIDTH
    return console
