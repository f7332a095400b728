"""Fixtures of the imaging tests: stitched label maps of known strips and a grey source."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from imaging.stitching import write_label_pyramid, write_strip

# ---------------------------------------------------------------- stitched label maps
#: palette of the stitching and rendering tests (class 2 never occurs in their label maps)
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
W = 600  # width of the stitched label strips (px)


def label_strips(rng) -> list[np.ndarray]:
    """Three strips (the last one shorter) of 5x5-px blocks of classes 0, 1 and 3 only.

    5 px blocks straddle the 2x2 windows of the pyramid, so a mean shrink would create 2s.
    """
    out = []
    for h in (224, 224, 152):
        blocks = rng.choice(np.array([0, 1, 3], np.uint8), size=(h // 5 + 1, W // 5 + 1))
        out.append(np.kron(blocks, np.ones((5, 5), np.uint8))[:h, :W].copy())
    return out


@pytest.fixture
def stitched(tmp_path):
    rng = np.random.default_rng(1)
    strips = label_strips(rng)
    paths = []
    for i, s in enumerate(strips):
        p = tmp_path / f"{i:05d}.tif"
        write_strip(s, p)
        paths.append(p)
    out = tmp_path / "labels.tif"
    write_label_pyramid(paths, out)
    return out, np.concatenate(strips)


@pytest.fixture
def source(tmp_path):
    """A smooth 16-bit grey source image of the stitched size (W x 600)."""
    y, x = np.mgrid[0:600, 0:W]
    grey = ((x + y) * 65535 // (W + 600)).astype(np.uint16)
    path = tmp_path / "source.tif"
    pyvips.Image.new_from_array(grey).tiffsave(str(path))
    return path, grey
