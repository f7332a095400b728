"""How labels were computed, in words: the one formatter of a row's ``inference`` record and of
``fractions.json``'s ``inference`` groups, used by ``pelletseg run`` and by the API (which serves
the words to the dashboard, so the browser formats none of them).

A record is ``{"runtime", "device", "precision", "f32_convs", "tta"}`` as a worker stores it
(``rows.inference``; ``worker.engine.segmenter.Segmenter.inference``); a group is a record
plus ``"rows"`` (``microstructure.fractions.inference_summary``), with every field None for
rows computed before records were kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["NOT_RECORDED", "PRECISION_NAMES", "inference_lines", "inference_text", "row_ranges"]

#: Display names of precision codes: a runtime's (``Runtime.precision``, ``model.json``
#: ``cpu_precision``, a row's ``inference`` record: f32, bf16, f16) and a job spec's
#: (:data:`core.spec.Precision`: fp32, bf16, fp16).
PRECISION_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16",
                   "fp32": "float32", "fp16": "float16"}

#: The words for rows whose inference was not recorded.
NOT_RECORDED = "not recorded (rows computed before it was)"


def inference_text(record: Mapping[str, Any]) -> str:
    """One way of computing labels in words.

    Args:
        record: A row's ``inference`` record or a ``fractions.json`` ``inference`` group.

    Returns:
        e.g. ``"openvino on cpu, bfloat16 (first 9 convolutions float32)"`` or ``"torch on
        cuda, float16, test-time flips"``; :data:`NOT_RECORDED` where ``runtime`` is None.
    """
    if record.get("runtime") is None:
        return NOT_RECORDED
    precision = record.get("precision")
    how = f"{record['runtime']} on {record.get('device')}, {PRECISION_NAMES.get(precision, precision)}"
    if record.get("f32_convs"):
        how += f" (first {record['f32_convs']} convolutions float32)"
    if record.get("tta") not in (None, "none"):
        how += f", test-time {record['tta']}"
    return how


def inference_lines(groups: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """How a job's rows were computed, one line per ``fractions.json`` ``inference`` group,
    the rows named where there are several groups.

    Args:
        groups: The document's ``inference`` list (None or empty for jobs from before it was
            recorded).

    Returns:
        e.g. ``["computed with rows 0-2, 5: openvino on cpu, bfloat16 (first 9 convolutions
        float32)", "computed with rows 3-4: openvino on cpu, float32"]``; [] without groups.
    """
    groups = groups or []
    lines = []
    for g in groups:
        rows = f"rows {row_ranges(g['rows'])}: " if len(groups) > 1 else ""
        lines.append(f"computed with {rows}{inference_text(g)}")
    return lines


def row_ranges(rows: Sequence[int]) -> str:
    """Sorted row indices as ranges: ``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    spans: list[list[int]] = []
    for r in rows:
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
