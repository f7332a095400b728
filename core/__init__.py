"""The vocabulary every pelletseg process shares: the one :class:`Settings` (``PELLETSEG_*``),
the one :class:`TileGeometry` (tile size, halo, stride, validated once), the versioned
:class:`JobSpec` stored on each job row, the job and row state machines, the rule for
what a source URL is, and the words for how a row's labels were computed
(:func:`inference_text`, :func:`inference_lines`: one formatter for the CLI and the dashboard).

May import: the standard library and pydantic only. Everything else in pelletseg may import
``core``; ``core`` does no I/O beyond reading the environment.
"""

from core.geometry import DEFAULT_GEOMETRY, GeometryError, TileGeometry
from core.inference import PRECISION_NAMES, inference_lines, inference_text
from core.settings import Settings, get_settings
from core.sources import is_bare_path, local_path, source_scheme
from core.spec import SPEC_VERSION, JobSpec, Precision, SpecError
from core.states import JOB_TERMINAL, JobStatus, RowStatus

__all__ = [
    "DEFAULT_GEOMETRY",
    "JOB_TERMINAL",
    "PRECISION_NAMES",
    "SPEC_VERSION",
    "GeometryError",
    "JobSpec",
    "JobStatus",
    "Precision",
    "RowStatus",
    "Settings",
    "SpecError",
    "TileGeometry",
    "get_settings",
    "inference_lines",
    "inference_text",
    "is_bare_path",
    "local_path",
    "source_scheme",
]
