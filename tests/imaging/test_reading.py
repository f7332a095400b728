"""Image reading: conversion rules to 8-bit RGB and clear errors for what cannot be read."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from imaging.errors import ImageFormatError
from imaging.reading import (
    black_fill_nodata,
    image_info,
    open_image,
    read_rows,
    to_rgb8,
    write_model_ready,
)


@pytest.mark.parametrize(
    ("bands", "fmt"), [(1, "uchar"), (2, "uchar"), (3, "ushort"), (4, "ushort")]
)
def test_to_rgb8_accepted_inputs(bands, fmt):
    value = 0x1234 if fmt == "ushort" else 0x56
    image = (pyvips.Image.black(5, 4, bands=bands) + value).cast(fmt)
    rgb = to_rgb8(image)
    assert (rgb.bands, rgb.format, rgb.width, rgb.height) == (3, "uchar", 5, 4)
    expected = 0x12 if fmt == "ushort" else 0x56
    assert set(np.unique(rgb.numpy()).tolist()) == {expected}


@pytest.mark.parametrize(
    "image",
    [
        pyvips.Image.black(4, 4, bands=5).cast("uchar"),
        pyvips.Image.black(4, 4, bands=3).cast("char"),
        pyvips.Image.black(4, 4).cast("int"),
    ],
    ids=["5-band", "int8", "int32"],
)
def test_to_rgb8_rejects_unsupported(image):
    with pytest.raises(ImageFormatError):
        to_rgb8(image)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = tmp_path / "huge.tif"
    pyvips.Image.black(300, 200).cast("uchar").tiffsave(str(path))
    with pytest.raises(ImageFormatError, match=r"huge.tif: 300 x 200 px = 60,000 px exceeds"):
        open_image(path, max_pixels=59_999)
    assert open_image(path, max_pixels=60_000).width == 300


def test_read_rows_of_16_bit_grey_follows_the_high_byte_rule(tmp_path):
    values = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20
    path = tmp_path / "grey16.tif"
    pyvips.Image.new_from_array(values).cast("ushort").tiffsave(str(path))
    rows = read_rows(open_image(path, max_pixels=10**6), 10, 20)
    assert rows.shape == (10, 64, 3) and rows.dtype == np.uint8
    np.testing.assert_array_equal(rows[..., 0], (values[10:20] >> 8).astype(np.uint8))
    np.testing.assert_array_equal(rows[..., 0], rows[..., 2])


def test_model_ready_conversion_is_tiled_rgb_and_lossless(tmp_path):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 255, (70, 90, 4), dtype=np.uint8)
    src = tmp_path / "rgba.png"
    pyvips.Image.new_from_array(rgba, interpretation="srgb").pngsave(str(src))
    assert not image_info(src, max_pixels=10**6).is_model_ready
    info = write_model_ready(src, tmp_path / "ready.tif", max_pixels=10**6)
    again = image_info(info.path, max_pixels=10**6)
    assert again.is_model_ready and (again.width, again.height) == (90, 70)
    np.testing.assert_array_equal(read_rows(open_image(info.path, max_pixels=10**6), 0, 70), rgba[..., :3])


# ------------------------------------------------------------ a stitched mosaic's black fill
def _fill_mask(a: np.ndarray) -> np.ndarray | None:
    mask = black_fill_nodata(pyvips.Image.new_from_array(a))
    return None if mask is None else mask.numpy() > 0


def test_black_fill_is_the_black_connected_to_the_border_and_nothing_inside():
    rng = np.random.default_rng(3)
    a = rng.integers(1, 256, (517, 701, 3), dtype=np.uint8)  # sides not multiples of 64
    a[300:, 450:] = 0  # a field never imaged, at the right and bottom edges
    a[:90, :130] = 0  # another, in the top left corner
    a[150:260, 150:300] = 0  # a black pore inside the image: imaged, stays
    a[5, 600] = a[400, 20] = 0  # black pixels elsewhere: stay
    want = np.zeros(a.shape[:2], bool)
    want[300:, 450:] = want[:90, :130] = True
    np.testing.assert_array_equal(_fill_mask(a), want)


def test_no_black_fill_where_noise_or_scattered_black_or_none():
    rng = np.random.default_rng(4)
    dark = rng.integers(0, 3, (300, 400, 3), dtype=np.uint8)  # a dark field, many pixels 0
    assert (dark.max(axis=2) == 0).any() and _fill_mask(dark) is None
    noisy = np.zeros((300, 400, 3), np.uint8)
    noisy[::32, ::32] = 1  # black but for a camera's noise: some pixel of every block lit
    assert _fill_mask(noisy) is None
    assert _fill_mask(rng.integers(1, 256, (300, 400, 3), dtype=np.uint8)) is None
