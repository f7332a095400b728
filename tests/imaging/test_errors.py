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
