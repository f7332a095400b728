"""Model packages: what a ``model.json`` says (architecture, classes with colours and label
values, normalisation, the tile geometry the model was trained and evaluated at, training
data and metrics, weights sha256), how a package is checked, and the registry that publishes
packages to the blob store and the job table and fetches them back (:class:`ModelRegistry`).
The packages bundled with pelletseg live in ``models/zoo``. Whether a package suits a job's
image (its training pixel sizes; the demo model's kind of images) is
:mod:`models.suitability`'s. Building the torch network is
:mod:`worker.engine.network`'s.

May import: ``core``, ``storage`` and pydantic; never torch, ``worker``, ``training`` or
``api``.
"""

from models.package import (
    MODEL_JSON,
    WEIGHTS_FILE,
    ClassInfo,
    ModelDomain,
    ModelPackage,
    ModelPackageError,
    Normalisation,
    read_package,
    sha256_file,
)
from models.registry import MODEL_ZOO, ModelRegistry

__all__ = [
    "MODEL_JSON",
    "MODEL_ZOO",
    "WEIGHTS_FILE",
    "ClassInfo",
    "ModelDomain",
    "ModelPackage",
    "ModelPackageError",
    "ModelRegistry",
    "Normalisation",
    "read_package",
    "sha256_file",
]
