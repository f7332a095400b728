"""core.job_warnings: the stored shape of a job warning and its two text forms."""

from __future__ import annotations

import pytest

from core.job_warnings import WarningCode, job_warning, warning_codes, warning_lines


def test_a_warning_is_code_and_message_and_reads_as_text_and_codes():
    w = [job_warning(WarningCode.PIXEL_SIZE_UNLIKE_MODEL, "pixel size 1 µm/px ..."),
         job_warning("pixels_not_square", "the file records ...")]
    assert w[0] == {"code": "pixel_size_unlike_model", "message": "pixel size 1 µm/px ..."}
    assert warning_lines(w) == ["warning: pixel size 1 µm/px ...",
                                "warning: the file records ..."]
    assert warning_codes(w) == "pixel_size_unlike_model;pixels_not_square"
    assert warning_lines(None) == [] and warning_codes([]) == ""
    with pytest.raises(ValueError):
        job_warning("no_such_code", "x")
