"""``/v1/models``: registered model packages."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import TableDep
from api.schemas import ModelOut

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelOut])
def list_models(table: TableDep):
    """Registered model packages, by name and version."""
    return [
        ModelOut(
            name=m.name, version=m.version, sha256=m.sha256, architecture=m.architecture,
            encoder=m.encoder, classes=m.classes, metrics=m.metrics, created_at=m.created_at,
        )
        for m in table.models.list()
    ]
