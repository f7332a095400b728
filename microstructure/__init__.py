"""What a section's label map says in numbers: phase fractions (area % per class, exact from
the rows' pixel counts) as a JSON document and CSV; and the microstructure (issue 14): pellets
(area, equivalent diameter, open and closed porosity), size distributions of 8-connected
objects, phase association (shared boundary length), radial profiles and the oxidation
front (:mod:`microstructure.oxidation`), computed as a
partial per row strip (:func:`row_partial`, in the row worker) merged exactly in the reducer
(:func:`merge_partials`); :func:`analyze_label_map` runs both on any label map file; a
batch's table of sections side by side (:func:`batch_csv`). Pure
functions on counts and arrays (numpy, scipy; pyvips only to read a label map file,
matplotlib only for the plot, both imported where used).

May import: ``core``, ``models`` (the class table), numpy, scipy, pyvips, matplotlib and
yaml; never torch, ``worker``, ``imaging`` or ``api``.
"""

from microstructure.analysis import analyze_label_map
from microstructure.batch import BatchEntry, batch_csv, section_figures
from microstructure.classes import ROLES, ClassInfo, classes_from_mappings, load_class_table
from microstructure.fractions import (
    CSV_FIELDS,
    fractions_csv,
    fractions_document,
    label_counts,
    phase_fractions,
)
from microstructure.merge import SCHEMA_VERSION, merge_partials
from microstructure.partials import BLOCK, PARTIAL_VERSION, RowPartial, row_partial
from microstructure.report import render_outputs, summary_lines

__all__ = [
    "BLOCK",
    "CSV_FIELDS",
    "PARTIAL_VERSION",
    "ROLES",
    "SCHEMA_VERSION",
    "BatchEntry",
    "ClassInfo",
    "RowPartial",
    "analyze_label_map",
    "batch_csv",
    "classes_from_mappings",
    "fractions_csv",
    "fractions_document",
    "label_counts",
    "load_class_table",
    "merge_partials",
    "phase_fractions",
    "render_outputs",
    "row_partial",
    "section_figures",
    "summary_lines",
]
