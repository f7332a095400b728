"""Getting a stack ready to take jobs: its home folder, the job table's schema and the
bundled model packages. Every entry point that creates jobs or runs workers calls
:func:`prepare` first (``pelletseg serve``, ``run``, ``worker``, ``train``, the benchmarks);
it is idempotent and imports no torch."""

from __future__ import annotations

from core.settings import Settings
from models import ModelRegistry
from storage.jobtable import upgrade

__all__ = ["prepare"]


def prepare(settings: Settings) -> ModelRegistry:
    """Create ``home``, migrate the job table (Alembic) and publish the bundled model
    packages (``models/zoo``).

    Returns:
        The stack's model registry.

    Raises:
        StorageError: the job table or store is unreachable.
        ModelPackageError: a bundled package fails its checks.
    """
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    registry = ModelRegistry.from_settings(settings)
    registry.publish_bundled()
    return registry
