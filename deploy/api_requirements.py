"""Print the API image's requirements: the project's dependencies (pyproject.toml) without the
torch family, which the API never imports (``api/`` imports ``storage/`` only; the bundled
model packages are published by copying files).

Used by ``deploy/Dockerfile.api``: ``python deploy/api_requirements.py pyproject.toml``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

#: Distributions the API image leaves out (PEP 503 normalised names).
EXCLUDED = frozenset({"torch", "torchvision", "segmentation-models-pytorch", "timm", "monai"})


def normalise(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """Distribution name of a PEP 508 requirement string (``"pyvips[binary]>=3"`` -> ``pyvips``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a PEP 508 requirement: {requirement!r}")
    return normalise(match.group(1))


def api_requirements(pyproject: Path) -> list[str]:
    """The ``[project].dependencies`` of ``pyproject`` minus :data:`EXCLUDED`, in file order.

    Raises:
        KeyError: the file has no ``[project].dependencies``.
    """
    data = tomllib.loads(pyproject.read_text())
    return [r for r in data["project"]["dependencies"] if requirement_name(r) not in EXCLUDED]


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    print("\n".join(api_requirements(path)))
