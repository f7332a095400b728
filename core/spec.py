"""The job spec: per-job options stored, versioned, on the job row.

Separate from :class:`core.settings.Settings` (per machine): a job keeps the options it was
submitted with even when workers run with other settings. The submission service
(:mod:`submission`) fills in what a request leaves out (the model's newest version, the model
package's tile geometry) before the spec is stored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_serializer, model_validator

from core.geometry import WithGeometry

__all__ = ["READABLE_SPEC_VERSIONS", "SPEC_VERSION", "EdgeTiles", "JobSpec", "Precision",
           "SpecError"]

SPEC_VERSION = 6
#: Stored spec versions this code reads: version 1 (before ``pixel_size_um``) reads as a
#: spec without a pixel size, version 2 (before ``precision``) as one without a precision. A
#: new field bumps the version, so that older workers refuse a spec they cannot read with
#: "upgrade the workers"; a new spec that leaves the new field unset keeps the version before
#: (a spec without ``precision`` is stored as version 2), so that jobs submitted while workers
#: are upgraded one by one run on the older workers too. Version 3 (before ``edge_tiles``) reads
#: as whole edge tiles, the layout its rows were planned with; version 4 (before
#: ``significant_bits``) as one without, version 5 (before ``scene``) likewise.
READABLE_SPEC_VERSIONS = (1, 2, 3, 4, 5, 6)

#: An inference precision, as ``PELLETSEG_PRECISION`` (a worker's) and a job spec's
#: ``precision`` (a job's) name it.
Precision = Literal["bf16", "fp16", "fp32"]

#: How a job's grid lays tiles at the image's right and bottom edges (:attr:`JobSpec.edge_tiles`).
EdgeTiles = Literal["whole", "fitted"]


class SpecError(ValueError):
    """A job spec is invalid or has a version this code cannot read."""


class JobSpec(WithGeometry):
    """Options of one segmentation job (spec version 6).

    Attributes:
        source_url: Where the pellet image is: ``file:///...``, ``s3://...``, or a local path.
        model: Model package name; ``model_version`` None means the newest registered version
            when the job is planned (the submission service stores the version it checked).
        tile_size, halo: Tile geometry (px), checked by :class:`core.geometry.TileGeometry`;
            see :attr:`geometry`.
        rows_per_task: Tile rows per row (the unit of work and checkpoint).
        labels: Free-form metadata (sample id, magnification, ...).
        webhook_url: Optional http(s) URL notified when the job ends (checked against
            private addresses at submission).
        pixel_size_um: Pixel size (µm/px, > 0) given with the job; None: read from the
            source's metadata when it records one (planning), else outputs are in px.
            Added in spec version 2.
        precision: The inference precision the job asks of every worker that runs one of
            its rows, with the meaning of ``PELLETSEG_PRECISION``
            (:attr:`core.settings.Settings.precision`), which it overrides for this job:
            ``fp32`` pins float32 everywhere (no CUDA autocast; OpenVINO in float32 even for
            a package validated for bfloat16), e.g. for a study whose labels must not depend
            on which CPU a row landed on; ``bf16`` / ``fp16`` pick the CUDA autocast dtype
            (on CPU the package and the CPU decide, as for the setting). None: each worker's
            setting. Each row records what it actually used (``rows.inference``,
            ``fractions.json`` ``inference``). Added in spec version 3.
        edge_tiles: ``fitted``: the last tile of each axis is only as long as its core, halo
            and edge padding need (:class:`worker.engine.tiling.TileGrid` ``fit_edges``; what
            the submission service stores for every new job); ``whole`` or None (a spec
            before version 4): a whole tile per core, the layout of jobs submitted before.
            Every row task lays the job's tiles out by it, so the rows of one job never mix
            layouts (a job resumed after an upgrade keeps its own). Added in spec version 4.
        significant_bits: How many of a 16-bit source's bits the camera fills (8-16; 12 for
            a 12-bit camera whose plain 16-bit TIFF does not say so): its 8-bit model input is
            then ``min(v >> (bits - 8), 255)`` instead of the high byte, which would leave such
            an image at 1/16 of its brightness (1/8 in signed 16-bit samples, whose range is
            15 bits: at most 15 is used for them). None: what the file records (OME-XML
            ``SignificantBits``, CZI ``ComponentBitCount``, TIFF ``MaxSampleValue``), else all
            the type's bits (:func:`imaging.reading.significant_bits_of`). Ignored for sources of other sample
            types, so one value may go with a batch of mixed files. Added in spec version 5.
        scene: Which image of an OME-TIFF of several (one scene per pellet of a mount) the job
            reads: the OME Image's 0-based index in the file (Bio-Formats' series index;
            :func:`imaging.formats.source_scenes` lists them). None: the file's one
            full-resolution image; an OME-TIFF of several similar-size images is then refused
            rather than read in part. A job given a scene for a file of another format fails
            at planning. Added in spec version 6.

    Raises (on construction):
        pydantic.ValidationError: a field is missing or invalid, including a tile geometry
            that breaks :class:`core.geometry.TileGeometry`'s rule.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec_version: Literal[1, 2, 3, 4, 5, 6] = SPEC_VERSION
    source_url: str
    model: str
    model_version: str | None = None
    rows_per_task: int = Field(1, ge=1)
    labels: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = None
    pixel_size_um: float | None = Field(None, gt=0, allow_inf_nan=False)
    precision: Precision | None = None
    edge_tiles: EdgeTiles | None = None
    significant_bits: int | None = Field(None, ge=8, le=16)
    scene: int | None = Field(None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _oldest_version_that_reads_it(cls, data: Any) -> Any:
        """A new spec (no ``spec_version`` given) gets the oldest version that holds its
        fields: 6 where it names a ``scene``, 5 where it names ``significant_bits``, 4 where
        it names ``edge_tiles``, 3 where it names a ``precision``, else 2."""
        if isinstance(data, dict) and "spec_version" not in data:
            version = (6 if data.get("scene") is not None
                       else 5 if data.get("significant_bits") is not None
                       else 4 if data.get("edge_tiles") is not None
                       else 3 if data.get("precision") is not None else 2)
            data = {**data, "spec_version": version}
        return data

    @model_validator(mode="after")
    def _version_holds_the_fields(self) -> JobSpec:
        if self.precision is not None and self.spec_version < 3:
            raise ValueError(f"precision needs spec version 3, not {self.spec_version}")
        if self.edge_tiles is not None and self.spec_version < 4:
            raise ValueError(f"edge_tiles needs spec version 4, not {self.spec_version}")
        if self.significant_bits is not None and self.spec_version < 5:
            raise ValueError(f"significant_bits needs spec version 5, not {self.spec_version}")
        if self.scene is not None and self.spec_version < 6:
            raise ValueError(f"scene needs spec version 6, not {self.spec_version}")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_newer_fields(self, handler):
        """The stored form leaves out ``precision``, ``edge_tiles``, ``significant_bits`` and
        ``scene`` when they are None, so a version-2 spec holds only version-2 fields and workers from
        before version 3 (which forbid unknown fields) read it."""
        data = handler(self)
        for name in ("precision", "edge_tiles", "significant_bits", "scene"):
            if getattr(self, name) is None:
                data.pop(name, None)
        return data

    @property
    def fit_edges(self) -> bool:
        """Whether the job's grid fits its edge tiles (:attr:`edge_tiles`)."""
        return self.edge_tiles == "fitted"

    @property
    def stride(self) -> int:
        """Core (output) edge of a tile: ``tile_size - 2 * halo`` (px)."""
        return self.geometry.stride

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> JobSpec:
        """Parse a spec read from the job row.

        Raises:
            SpecError: unknown ``spec_version`` or invalid fields.
        """
        version = data.get("spec_version")
        if version not in READABLE_SPEC_VERSIONS:
            raise SpecError(
                f"job spec version {version!r} is not supported by this pelletseg "
                f"(reads versions {', '.join(map(str, READABLE_SPEC_VERSIONS))}); "
                "upgrade the workers"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise SpecError(f"stored job spec is invalid: {e}") from e
