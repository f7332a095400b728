"""libvips errors as pyvips raises them, whatever bytes libvips' error buffer holds
(:mod:`imaging.errors`)."""

from __future__ import annotations

import pytest
import pyvips

from imaging.errors import clear_vips_errors, vips_text


def _buffer() -> bytes:
    return pyvips.ffi.string(pyvips.vips_lib.vips_error_buffer())


def _leave_a_latin1_message(tmp_path) -> None:
    """What libvips does when it probes a file named in Latin-1 (a Windows microscope PC's
    share): the call returns, its message stays in the process-wide buffer."""
    name = bytes(tmp_path / "Schliff_") + b"\xa9.tif"
    assert pyvips.vips_lib.vips_foreign_find_load(name) == pyvips.ffi.NULL
    assert b"\xa9" in _buffer()


def test_a_latin1_byte_left_by_libvips_spoils_no_later_error(tmp_path):
    """pyvips decodes the buffer as strict UTF-8 (libvips/pyvips#80): unpatched, this error and
    every later one in the process would be a UnicodeDecodeError that no ``except pyvips.Error``
    catches. Now the byte shows as an escape, and the buffer is empty again after the raise."""
    _leave_a_latin1_message(tmp_path)
    with pytest.raises(pyvips.Error) as first:
        pyvips.Image.new_from_file(str(tmp_path / "missing.tif"))
    assert 'Schliff_\\xa9.tif" does not exist' in first.value.detail
    assert "missing.tif" in vips_text(first.value)
    assert _buffer() == b""
    with pytest.raises(pyvips.Error) as second:
        pyvips.Image.new_from_file(str(tmp_path / "other.tif"))
    assert "other.tif" in second.value.detail and "Schliff" not in second.value.detail


def test_a_file_whose_content_libvips_quotes_fails_as_a_pyvips_error(tmp_path):
    """libvips' matrix loader quotes the token it cannot read, in the file's own bytes."""
    matrix = tmp_path / "weights.mat"
    matrix.write_bytes(b"3 3\n1 2 \xa9\n")
    with pytest.raises(pyvips.Error) as e:
        pyvips.Image.new_from_file(str(matrix)).avg()
    assert 'bad number "\\xa9"' in vips_text(e.value)
    assert _buffer() == b""


def test_clear_vips_errors_empties_what_succeeding_calls_left(tmp_path):
    _leave_a_latin1_message(tmp_path)
    clear_vips_errors()
    assert _buffer() == b""
    with pytest.raises(pyvips.Error) as e:
        pyvips.Image.new_from_file(str(tmp_path / "missing.tif"))
    assert "Schliff" not in str(e.value)


def _full_disk(path):
    """``path`` made a link to /dev/full, where every write fails with ENOSPC (skips where the
    OS has no /dev/full)."""
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to make a disk that is full")
    os.symlink("/dev/full", path)
    return path


def test_write_errors_are_told_from_damaged_pixels(tmp_path):
    """libvips' own texts: a save into a full disk is a write error; a truncated file a
    decode error."""
    from imaging.errors import write_failure

    image = pyvips.Image.black(600, 400, bands=3)
    errors = []
    for save in (lambda p: image.tiffsave(p, tile=True, compression="deflate"),
                 lambda p: image.pngsave(p), lambda p: image.jpegsave(p)):
        target = _full_disk(tmp_path / f"full-{len(errors)}")
        with pytest.raises(pyvips.Error) as caught:
            save(str(target))
        errors.append(caught.value)
    assert [write_failure(e) for e in errors] == ["No space left on device"] * 3, errors
    good = tmp_path / "good.tif"
    image.tiffsave(str(good))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(pyvips.Error) as caught:
        pyvips.Image.new_from_file(str(truncated), fail_on="warning").avg()
    assert write_failure(caught.value) is None, str(caught.value)
    assert write_failure(OSError("wbuffer_write: write failed")) == "write error"


def test_a_conversion_into_a_full_disk_is_not_called_a_damaged_source(tmp_path, micrograph):
    """Before 2026-12-07 a worker whose disk filled up while converting a source failed the
    job for good with 'the file is truncated or corrupt ... upload it again'."""
    from imaging.errors import ImageFormatError, OutputWriteError
    from imaging.reading import write_model_ready

    out = tmp_path / "job" / "source.tif"
    out.parent.mkdir()
    _full_disk(out.with_name("source.tif.part.tif"))
    with pytest.raises(OutputWriteError) as caught:
        write_model_ready(micrograph, out, max_pixels=10**9)
    assert not isinstance(caught.value, ImageFormatError)
    text = str(caught.value)
    assert f"{out} (made from {micrograph.name}) cannot be written " \
        "(No space left on device):" in text  # the reason, not libvips' log
    assert f"{micrograph.name} is not at fault" in text and "PELLETSEG_CACHE_DIR" in text
    assert list(out.parent.iterdir()) == []  # the partial file (here the link) is gone
    write_model_ready(micrograph, out, max_pixels=10**9)  # space again: converted
    assert pyvips.Image.new_from_file(str(out)).width == 700


def test_a_nodata_mask_into_a_full_disk_is_not_called_a_damaged_source(tmp_path):
    """The planner's mask of a stitched mosaic's black fill, written beside the source."""
    from imaging.errors import ImageFormatError, OutputWriteError
    from imaging.reading import write_black_fill_nodata

    mosaic = pyvips.Image.black(600, 400, bands=3).draw_rect([150, 120, 90], 0, 0, 300, 400,
                                                             fill=True)
    source = tmp_path / "mosaic.tif"
    mosaic.cast("uchar").tiffsave(str(source), tile=True)
    assert write_black_fill_nodata(source, tmp_path / "ok.tif", max_pixels=10**9)
    with pytest.raises(OutputWriteError) as caught:
        _full_disk(tmp_path / "nodata.tif.part.tif")  # where write_nodata writes first
        write_black_fill_nodata(source, tmp_path / "nodata.tif", max_pixels=10**9)
    assert not isinstance(caught.value, ImageFormatError)
    assert f"{tmp_path / 'nodata.tif'} (made from mosaic.tif) cannot be written" in str(
        caught.value)
