"""What a section's label map says in numbers: phase fractions (area % per class, exact from
the rows' pixel counts) as a JSON document and CSV. Pure functions on counts and arrays.

May import: ``core``, ``models`` (the class table) and numpy; never torch, ``worker`` or
``api``.
"""

from microstructure.fractions import (
    CSV_FIELDS,
    fractions_csv,
    fractions_document,
    label_counts,
    phase_fractions,
)

__all__ = ["CSV_FIELDS", "fractions_csv", "fractions_document", "label_counts", "phase_fractions"]
