"""Tile geometry: the one (tile size, halo) pair and its rule, shared by settings, job specs,
model packages, training, evaluation and serving.

Overlap-tile strategy (Ronneberger et al., "U-Net", MICCAI 2015): the model sees tiles of
T x T px (the *tile size*); only the central *core* of ``stride = T - 2 * halo`` px is kept,
so every output pixel is predicted with at least ``halo`` px of context on every side.
Tiles are laid out ``stride`` px apart, so their cores cover the image without gaps or
overlaps. How a geometry is laid over one image is :class:`worker.engine.tiling.TileGrid`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, model_validator

__all__ = ["DEFAULT_GEOMETRY", "MIN_STRIDE", "TILE_MULTIPLE", "GeometryError", "TileGeometry",
           "WithGeometry", "model_size", "model_tile_size"]

#: Tile sizes are multiples of this (px): the encoders halve the resolution 5 times.
TILE_MULTIPLE = 32
#: Smallest core kept per tile (px).
MIN_STRIDE = 32


class GeometryError(ValueError):
    """Tile geometry parameters are inconsistent (e.g. a halo too large for the tile)."""


def model_size(size: int, scale: float) -> int:
    """Side (model px) of a ``size`` px image side at a model package's ``input_scale``
    (model px per image px): ``round(size * scale)``, at least 1."""
    return max(1, round(size * scale))


def model_tile_size(tile_size: int, input_scale: float) -> int:
    """The edge (model px) the network sees for a ``tile_size`` px tile of a package working
    at ``input_scale``: :func:`model_size`, which the rule requires to be a multiple of
    :data:`TILE_MULTIPLE` (the encoders halve the resolution 5 times).

    Raises:
        GeometryError: ``tile_size * input_scale`` is not a multiple of 32 model px (the
            message names the tile, the scale and what to choose instead).
    """
    side = model_size(tile_size, input_scale)
    if side % TILE_MULTIPLE:
        raise GeometryError(f"a {tile_size} px tile at input scale {input_scale:g} is {side} "
                            f"model px, not a multiple of {TILE_MULTIPLE}: choose a tile size T "
                            f"with T x input scale a multiple of {TILE_MULTIPLE}")
    return side


@dataclass(frozen=True)
class TileGeometry:
    """Tile size and halo, validated on construction by the only geometry rule in pelletseg.

    Attributes:
        tile_size: Tile edge T fed to the model (px); a positive multiple of
            :data:`TILE_MULTIPLE` (32).
        halo: Context kept on each side of a tile and cropped after inference (px), >= 0.

    Raises (on construction):
        GeometryError: ``tile_size`` is not a positive multiple of 32 px, ``halo`` is
            negative, or the core ``stride = tile_size - 2 * halo`` is below
            :data:`MIN_STRIDE` (32) px.
    """

    tile_size: int
    halo: int

    def __post_init__(self) -> None:
        t, h = self.tile_size, self.halo
        if isinstance(t, bool) or not isinstance(t, int) or isinstance(h, bool) or not isinstance(h, int):
            raise GeometryError(f"tile_size and halo must be whole px, got {t!r} and {h!r}")
        if t < TILE_MULTIPLE or t % TILE_MULTIPLE:
            raise GeometryError(f"tile_size must be a multiple of {TILE_MULTIPLE} px, got {t}")
        if h < 0:
            raise GeometryError(f"halo must be >= 0 px, got {h}")
        if t - 2 * h < MIN_STRIDE:
            raise GeometryError(f"tile_size - 2*halo must be >= {MIN_STRIDE} px "
                                f"(got T={t}, halo={h})")

    @property
    def stride(self) -> int:
        """Core edge of a tile = distance between tile origins: ``tile_size - 2 * halo`` (px)."""
        return self.tile_size - 2 * self.halo

    @property
    def overlap_cost(self) -> float:
        """Model pixels computed per output pixel, ``(tile_size / stride) ** 2`` (>= 1; ignores
        the padding at the image's right and bottom edges)."""
        return (self.tile_size / self.stride) ** 2

    def as_dict(self) -> dict[str, int]:
        """``{"tile_size": T, "halo": h}``, as stored in job specs and ``model.json``."""
        return {"tile_size": self.tile_size, "halo": self.halo}

    def __str__(self) -> str:
        return f"tile {self.tile_size} px, halo {self.halo} px, stride {self.stride} px"


class WithGeometry(BaseModel):
    """The ``tile_size`` and ``halo`` fields (px) of a stored document (job spec,
    ``model.json``), checked by :class:`TileGeometry`'s rule on validation.

    Raises (on validation):
        pydantic.ValidationError: the pair breaks the rule (the message is
            :class:`GeometryError`'s).
    """

    tile_size: int
    halo: int

    @model_validator(mode="after")
    def _geometry_valid(self):
        try:
            TileGeometry(self.tile_size, self.halo)
        except GeometryError as e:
            raise ValueError(str(e)) from None
        return self

    @property
    def geometry(self) -> TileGeometry:
        """The tile geometry."""
        return TileGeometry(self.tile_size, self.halo)


#: The geometry ``pelletseg train`` records in a new model package unless told otherwise:
#: T = 1024 px, halo = 128 px (stride 768 px), at which the bundled model's tiled labels agree
#: with whole-image labels on >= 99.9 % of pixels (tests/worker/engine/test_seams.py) and which was
#: the fastest on CPU (docs/performance.md). A job runs at its model package's geometry.
DEFAULT_GEOMETRY = TileGeometry(1024, 128)
