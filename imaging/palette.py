"""Colour tables of stored label maps: the one mapping from class index to RGB used by the
reducer (overlay, preview) and by the API's viewer tiles, so both show the same colours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyvips


def palette_lut(palette: Sequence[Sequence[int]]) -> pyvips.Image:
    """A 256-entry RGB lookup table (1 x 256 px, 3 bands, uint8) for class indices, to apply
    with ``label_image.maplut(lut)``.

    Args:
        palette: ``palette[i]`` is the (r, g, b) colour (0-255) of class index ``i``; indices
            beyond it map to black.

    Raises:
        ValueError: no colour or more than 256, or a colour that is not three values in 0-255.
    """
    if not 0 < len(palette) <= 256:
        raise ValueError(f"a palette needs 1 to 256 colours, got {len(palette)}")
    table = np.zeros((1, 256, 3), dtype=np.uint8)
    for i, rgb in enumerate(palette):
        if len(rgb) != 3 or not all(0 <= int(v) <= 255 for v in rgb):
            raise ValueError(f"palette colour {i} is {rgb!r}; expected (r, g, b) in 0-255")
        table[0, i] = [int(v) for v in rgb]
    return pyvips.Image.new_from_array(table)
