"""The job spec: per-run options stored, versioned, on the job row.

Separate from :class:`storage.settings.Settings` (per-machine): a job keeps the options it was
submitted with even when workers run with other settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from storage.errors import SpecError

SPEC_VERSION = 1


class JobSpec(BaseModel):
    """Options of one segmentation job (spec version 1).

    Attributes:
        source_url: Where the pellet image is: ``file:///...``, ``s3://...``, or a local path.
        model: Model package name; ``version`` None means the newest registered version.
        tile_size: Tile edge T fed to the model (px); a multiple of 32.
        halo: Context kept on each side of a tile and cropped away (px); stride = T - 2*halo.
        rows_per_task: Tile rows per row record / segment_row task.
        labels: Free-form metadata (sample id, magnification, µm/px, ...).
        webhook_url: Optional http(s) URL notified when the job ends (checked against
            private addresses at submission by the API).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec_version: Literal[1] = SPEC_VERSION
    source_url: str
    model: str
    model_version: str | None = None
    tile_size: int = Field(1024, ge=32)
    halo: int = Field(128, ge=0)
    rows_per_task: int = Field(1, ge=1)
    labels: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = None

    @model_validator(mode="after")
    def _check_geometry(self) -> "JobSpec":
        if self.tile_size % 32:
            raise ValueError(f"tile_size must be a multiple of 32 px, got {self.tile_size}")
        if self.tile_size - 2 * self.halo < 32:
            raise ValueError(
                f"tile_size - 2*halo must be >= 32 px (got T={self.tile_size}, halo={self.halo})"
            )
        return self

    @property
    def stride(self) -> int:
        """Core (output) edge of a tile: ``tile_size - 2 * halo`` (px)."""
        return self.tile_size - 2 * self.halo

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> "JobSpec":
        """Parse a spec read from the job row.

        Raises:
            SpecError: unknown ``spec_version`` or invalid fields.
        """
        version = data.get("spec_version")
        if version != SPEC_VERSION:
            raise SpecError(
                f"job spec version {version!r} is not supported by this pelletseg "
                f"(reads version {SPEC_VERSION}); upgrade the workers"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise SpecError(f"stored job spec is invalid: {e}") from e
