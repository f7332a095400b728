"""core.inference: the words for how labels were computed, shared by `pelletseg run` and the
API (which serves them to the dashboard)."""

from __future__ import annotations

import pytest

from core.inference import (
    NOT_RECORDED,
    PRECISION_NAMES,
    inference_lines,
    inference_text,
    row_ranges,
)

BF16 = {"runtime": "openvino", "device": "cpu", "precision": "bf16", "f32_convs": 9,
        "tta": "none", "rows": [0, 1, 2, 5]}
F32 = {**BF16, "precision": "f32", "f32_convs": 0, "tta": "flips", "rows": [3, 4]}
UNKNOWN = {**{k: None for k in BF16}, "rows": [6]}


def test_one_record_in_words():
    assert inference_text(BF16) == "openvino on cpu, bfloat16 (first 9 convolutions float32)"
    assert inference_text(F32) == "openvino on cpu, float32, test-time flips"
    # a row record has no "rows"; f32_convs 0 and tta "none" say nothing
    record = {k: v for k, v in F32.items() if k != "rows"} | {"tta": "none"}
    assert inference_text(record) == "openvino on cpu, float32"
    assert inference_text(UNKNOWN) == NOT_RECORDED
    # a code not in the table is shown as it is rather than dropped
    assert inference_text({**F32, "precision": "int8", "tta": None}) == "openvino on cpu, int8"


def test_groups_name_their_rows_only_where_there_are_several():
    assert inference_lines(None) == [] and inference_lines([]) == []  # not recorded
    assert inference_lines([BF16]) == [
        "computed with openvino on cpu, bfloat16 (first 9 convolutions float32)"]
    assert inference_lines([BF16, F32, UNKNOWN]) == [
        "computed with rows 0-2, 5: openvino on cpu, bfloat16 (first 9 convolutions float32)",
        "computed with rows 3-4: openvino on cpu, float32, test-time flips",
        "computed with rows 6: not recorded (rows computed before it was)"]


@pytest.mark.parametrize(("rows", "text"), [
    ([0], "0"), ([0, 1, 2, 5], "0-2, 5"), ([1, 3, 4, 5, 9, 10], "1, 3-5, 9-10"), ([], "")])
def test_row_ranges(rows, text):
    assert row_ranges(rows) == text


def test_runtime_and_spec_precision_codes_have_one_name_each():
    """A row's record says f32/bf16/f16 (the runtimes' codes); a job spec says fp32/bf16/fp16
    (core.spec.Precision): both name the same three dtypes."""
    from typing import get_args

    from core.spec import Precision

    assert {PRECISION_NAMES[c] for c in get_args(Precision)} == {"float32", "bfloat16", "float16"}
    assert {PRECISION_NAMES[c] for c in ("f32", "bf16", "f16")} == {"float32", "bfloat16", "float16"}
