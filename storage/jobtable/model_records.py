"""Model records: which
model packages exist, by name, version and weights sha256."""

from __future__ import annotations

from sqlalchemy import insert, select

from storage.errors import NotFoundError, StorageError
from storage.jobtable.base import Repository
from storage.jobtable.retries import with_retries
from storage.jobtable.tables import ModelRecord, utcnow


@with_retries  # lost/refused connections retried with backoff (storage/jobtable/retries.py)
class ModelRecords(Repository):
    """The ``models`` table: registered model packages.

    Raises (every method):
        StorageError: the database failed or is unreachable.
        NotFoundError: a model that must exist does not.
    """

    def register(
        self,
        *,
        name: str,
        version: str,
        sha256: str,
        architecture: str,
        encoder: str,
        classes: list,
        metrics: dict | None = None,
    ) -> bool:
        """Register a model package; idempotent for the same (name, version, sha256).

        Returns:
            True if a new record was inserted.

        Raises:
            StorageError: (name, version) is registered with different weights.
        """
        with self._tx() as conn:
            existing = conn.execute(
                select(ModelRecord.sha256).where(
                    ModelRecord.name == name, ModelRecord.version == version
                )
            ).scalar_one_or_none()
            if existing is not None:
                if existing != sha256:
                    raise StorageError(
                        f"model {name} {version} is already registered with weights sha256 "
                        f"{existing[:12]}..., not {sha256[:12]}...; publish a new version"
                    )
                return False
            conn.execute(
                insert(ModelRecord).values(
                    name=name, version=version, sha256=sha256, architecture=architecture,
                    encoder=encoder, classes=classes, metrics=metrics, created_at=utcnow(),
                )
            )
        return True

    def get(self, name: str, version: str | None = None) -> ModelRecord:
        """A registered model; ``version`` None picks the most recently registered one.

        Raises:
            NotFoundError: no such model (the message lists the registered names).
        """
        q = select(ModelRecord).where(ModelRecord.name == name)
        if version is not None:
            q = q.where(ModelRecord.version == version)
        q = q.order_by(ModelRecord.created_at.desc(), ModelRecord.id.desc()).limit(1)
        with self._tx() as conn:
            row = conn.execute(q).first()
            if row is None:
                known = sorted(
                    {f"{n} {v}" for n, v in conn.execute(
                        select(ModelRecord.name, ModelRecord.version))}
                )
        if row is None:
            what = f"{name} {version}" if version else name
            raise NotFoundError(
                f"model {what!r} is not registered; registered models: {known or 'none'}"
            )
        return row[0]

    def list(self) -> list[ModelRecord]:
        """All registered model packages, by name and version."""
        with self._tx() as conn:
            return [
                r[0] for r in conn.execute(
                    select(ModelRecord).order_by(ModelRecord.name, ModelRecord.version))
            ]
