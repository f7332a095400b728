"""Damaged images never yield pixels: real files (TIFF, BigTIFF, JPEG, PNG), cut or overwritten
with noise at the header, the first tile, the last tile and the middle of a strip, fail with
:class:`ImageFormatError` naming the file and what to do, where libvips' defaults would decode
them silently (imaging/integrity.py). Intact files of each kind still read."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile

from imaging.errors import ImageFormatError
from imaging.reading import open_image, read_rows, write_model_ready

MAX = 10**9
RNG = np.random.default_rng(3)
#: a smooth picture with texture (compresses like a micrograph, not like pure noise)
PIXELS = (np.add.outer(np.arange(256), np.arange(256))[..., None] // 2
          + RNG.integers(0, 40, (256, 256, 3))).astype(np.uint8)


def _tiff(path: Path, **kw) -> Path:
    tifffile.imwrite(path, PIXELS, photometric="rgb", compression="zlib", **kw)
    return path


def _noise(path: Path, at: int, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[at:at + n] = random.Random(at).randbytes(n)
    path.write_bytes(bytes(data))


def _cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _offsets(path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return page.dataoffsets, page.databytecounts


def _decode_all(path: Path) -> None:
    image = open_image(path, max_pixels=MAX)
    read_rows(image, 0, image.height)


def _tiled(tmp_path, bigtiff):
    return _tiff(tmp_path / ("big.tif" if bigtiff else "tiled.tif"), tile=(64, 64),
                 bigtiff=bigtiff)


def damage_header(path):
    _noise(path, 0, 8)


def damage_first_tile(path):
    offsets, _ = _offsets(path)
    _noise(path, offsets[0] + 2)  # the tile's deflate stream, just after its 2-byte header


def cut_last_tile(path):
    offsets, counts = _offsets(path)
    last = int(np.argmax(offsets))
    _cut(path, offsets[last] + counts[last] // 2)


def cut_half(path):
    _cut(path, path.stat().st_size // 2)


def noise_middle(path):
    _noise(path, path.stat().st_size // 2)


@pytest.mark.parametrize("bigtiff", [False, True], ids=["tiff", "bigtiff"])
@pytest.mark.parametrize("damage", [damage_header, damage_first_tile, cut_last_tile, cut_half],
                         ids=lambda f: f.__name__)
def test_damaged_tiled_tiffs_fail(tmp_path, bigtiff, damage):
    path = _tiled(tmp_path, bigtiff)
    _decode_all(path)  # intact: reads
    damage(path)
    with pytest.raises(ImageFormatError) as e:
        _decode_all(path)
    assert path.name in str(e.value) and "upload it again" in str(e.value)
    print(e.value)


def test_a_cut_tile_is_named_with_its_rows(tmp_path):
    path = _tiled(tmp_path, False)
    cut_last_tile(path)
    image = open_image(path, max_pixels=MAX)
    read_rows(image, 0, 64)  # the first tile row is intact
    with pytest.raises(ImageFormatError) as e:
        read_rows(image, 192, 256)
    assert "image rows 192-256" in str(e.value) and "tile" in str(e.value)


@pytest.mark.parametrize("bigtiff", [False, True], ids=["tiff", "bigtiff"])
def test_noise_in_the_middle_of_a_strip_fails(tmp_path, bigtiff):
    path = _tiff(tmp_path / "strips.tif", rowsperstrip=64, bigtiff=bigtiff)
    _decode_all(path)
    offsets, counts = _offsets(path)
    _noise(path, offsets[1] + counts[1] // 2)
    with pytest.raises(ImageFormatError):
        _decode_all(path)


@pytest.mark.parametrize("tiled", [False, True], ids=["strips", "tiles"])
def test_noise_that_libtiff_decodes_is_caught_by_the_deflate_checksum(tmp_path, tiled):
    """Noise inside a deflate stream mostly still inflates to a full tile/strip: libtiff stops
    when its buffer is full and never reads the stream's Adler-32 (imaging/integrity.py), so
    libvips (even with ``fail_on="warning"``) decodes most of these files. Every one fails
    here."""
    missed_by_libvips = 0
    for k in range(12):
        path = _tiff(tmp_path / f"n{k}.tif",
                     **({"tile": (128, 128)} if tiled else {"rowsperstrip": 64}))
        offsets, counts = _offsets(path)
        _noise(path, offsets[1] + counts[1] // 2 + 7 * k, n=16)
        try:
            pyvips.Image.new_from_file(str(path), fail_on="warning").numpy()
            missed_by_libvips += 1
        except pyvips.Error:
            pass
        with pytest.raises(ImageFormatError) as e:
            _decode_all(path)
        assert path.name in str(e.value) and "upload it again" in str(e.value)
        with pytest.raises(ImageFormatError):  # nor is it converted
            write_model_ready(path, tmp_path / "ready.tif", max_pixels=MAX)
        assert not (tmp_path / "ready.tif").exists()
    assert missed_by_libvips > 0  # the gap this check closes is real


@pytest.mark.parametrize("kind", ["jpg", "png"])
@pytest.mark.parametrize("damage", [damage_header, cut_half, noise_middle],
                         ids=lambda f: f.__name__)
def test_damaged_jpeg_and_png_fail(tmp_path, kind, damage):
    path = tmp_path / f"p.{kind}"
    image = pyvips.Image.new_from_array(PIXELS).copy(interpretation="srgb")
    image.jpegsave(str(path), Q=90) if kind == "jpg" else image.pngsave(str(path))
    _decode_all(path)
    damage(path)
    with pytest.raises(ImageFormatError):
        _decode_all(path)
    with pytest.raises(ImageFormatError):  # nor can it be converted for the rows
        write_model_ready(path, tmp_path / "ready.tif", max_pixels=MAX)
    assert not (tmp_path / "ready.tif").exists()


def test_tiffs_with_private_tags_still_read(tmp_path):
    path = tmp_path / "sem.tif"
    tifffile.imwrite(path, PIXELS, photometric="rgb", tile=(64, 64), compression="zlib",
                     extratags=[(34118, "s", 0, "microscope settings", True),
                                (65000, "s", 0, "vendor", True)])
    image = open_image(path, max_pixels=MAX)
    assert np.array_equal(read_rows(image, 0, 256), PIXELS)


def test_a_one_pixel_image_reads(tmp_path):
    path = tmp_path / "one.png"
    pyvips.Image.new_from_array(PIXELS[:1, :1]).copy(interpretation="srgb").pngsave(str(path))
    assert read_rows(open_image(path, max_pixels=MAX), 0, 1).shape == (1, 1, 3)
