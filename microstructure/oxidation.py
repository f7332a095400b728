"""The oxidation front of a pellet: how deep from its surface magnetite has turned to hematite.

A magnetite pellet oxidises from its surface inwards during induration: a hematite shell grows
around a magnetite core, and the depth of the boundary between them, the *oxidation front*, is
what a metallurgist reads from a polished section (Nellros & Thurley, *Minerals Engineering*
24 (2011) 1525-1531: % hematite and magnetite against the distance to the pellet surface; a
microscopist measures the shell's thickness around the pellet and averages it).

Three figures per pellet, where the class table has hematite and magnetite
(:func:`oxidation_classes`):

- the **oxidised share**: hematite / (hematite + magnetite) by area (%), exact from the
  pellet's pixel counts; pores, epoxy and other phases do not count;
- the **oxidation front depth**: the thickness of the shell, measured from the pellet surface
  inwards, that holds all the pellet's hematite if the iron oxides shallower than it were all
  hematite and those deeper all magnetite (:func:`front_depth`). For a sharp front it is the
  front's mean depth around the pellet; it does not depend on the radial profile's band width.
  Its distances are those of the radial profiles (16 px blocks, Euclidean distance transform:
  about ±8 px), and hematite inside the core (or magnetite in the shell) moves it by their area;
- the **shell share**: the share of the pellet's hematite that lies above its front (%,
  :func:`amount_above`): 100 for a clean hematite shell, about the oxidised share where
  hematite is spread evenly through the pellet (no front), near 0 where it sits in the core
  (a reduced pellet). It says whether the front depth describes a shell at all.

Pure numpy on the block grid of :func:`microstructure.merge.merge_partials`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from microstructure.classes import ClassInfo

__all__ = ["FIELDS", "OXIDISED_NAMES", "UNOXIDISED_NAMES", "amount_above", "front_depth",
           "oxidation_classes", "pellet_oxidation"]

#: Class names (case-insensitive) of the oxidised phase and of the phase it grows from.
OXIDISED_NAMES = ("hematite", "haematite")
UNOXIDISED_NAMES = ("magnetite",)
#: A pellet's oxidation fields in ``microstructure.json`` and ``pellets.csv``
#: (:func:`pellet_oxidation`).
FIELDS = ("oxidised_share_percent", "oxidation_front_px", "oxidation_front_um",
          "oxidation_front_shell_percent")


def oxidation_classes(classes: Sequence[ClassInfo]) -> tuple[int, int] | None:
    """Indices in ``classes`` of the oxidised and the unoxidised phase, or None.

    Both must be ``phase`` classes named as in :data:`OXIDISED_NAMES` and
    :data:`UNOXIDISED_NAMES` (case-insensitive); otherwise there is no oxidation front to read
    (a model of other phases).
    """
    def find(names: Sequence[str]) -> int | None:
        return next((k for k, c in enumerate(classes)
                     if c.role == "phase" and c.name.lower() in names), None)

    oxidised, unoxidised = find(OXIDISED_NAMES), find(UNOXIDISED_NAMES)
    return None if oxidised is None or unoxidised is None else (oxidised, unoxidised)


def front_depth(depth_px: np.ndarray, oxidised: np.ndarray, oxides: np.ndarray,
                half_width_px: float) -> float | None:
    """The oxidation front depth (px) of one pellet from its blocks.

    Each block's iron oxide pixels are spread evenly over the depths ``depth ± half_width``;
    the result is the depth D at which the iron oxides shallower than D number the pellet's
    hematite pixels (piecewise linear in D, solved exactly).

    Args:
        depth_px: (N,) float, each block's centre's distance from the pellet surface (px).
        oxidised: (N,) hematite pixels of each block.
        oxides: (N,) hematite + magnetite pixels of each block (>= ``oxidised``).
        half_width_px: Half a block's edge (px).

    Returns:
        The depth (px, >= 0): 0 without hematite, the deepest block's far edge without
        magnetite; None where the pellet has neither.

    Raises:
        ValueError: arrays of different lengths or ``oxidised`` > ``oxides`` somewhere.
    """
    depth_px = np.asarray(depth_px, dtype=np.float64)
    oxidised = np.asarray(oxidised, dtype=np.float64)
    oxides = np.asarray(oxides, dtype=np.float64)
    if not depth_px.shape == oxidised.shape == oxides.shape:
        raise ValueError(f"depth {depth_px.shape}, oxidised {oxidised.shape} and oxides "
                         f"{oxides.shape} must have one length")
    if np.any(oxidised > oxides):
        raise ValueError("a block has more hematite than hematite + magnetite pixels")
    target = oxidised.sum()
    if oxides.sum() == 0:
        return None
    if target == 0:
        return 0.0
    x = np.concatenate([depth_px - half_width_px, depth_px + half_width_px])
    rate = np.concatenate([oxides, -oxides]) / (2 * half_width_px)  # px of oxide per px depth
    order = np.argsort(x, kind="stable")  # a block's start before an end at the same depth
    x, slope = x[order], np.cumsum(rate[order])
    below = np.concatenate([[0.0], np.cumsum(slope[:-1] * np.diff(x))])  # oxides above x[k]
    k = int(np.searchsorted(below, target))  # first x[k] with at least the target above it
    if k >= x.size:  # no magnetite (the target is every oxide pixel, up to rounding)
        return float(x[-1])
    if k == 0:
        return float(max(x[0], 0.0))
    return float(max(x[k - 1] + (target - below[k - 1]) / slope[k - 1], 0.0))


def amount_above(depth_px: np.ndarray, amounts: np.ndarray, half_width_px: float,
                 limit_px: float) -> float:
    """How much of ``amounts`` lies above ``limit_px``, each block's amount spread evenly over
    the depths ``depth ± half_width`` as in :func:`front_depth`.

    Args:
        depth_px: (N,) float, each block's centre's distance from the pellet surface (px).
        amounts: (N,) pixels of each block (e.g. its hematite).
        half_width_px: Half a block's edge (px).
        limit_px: Depth (px).

    Returns:
        The pixels above ``limit_px`` (a float: blocks across it count in part).
    """
    depth_px = np.asarray(depth_px, dtype=np.float64)
    part = np.clip((limit_px - (depth_px - half_width_px)) / (2 * half_width_px), 0.0, 1.0)
    return float(np.dot(part, np.asarray(amounts, dtype=np.float64)))


def pellet_oxidation(oxidised_px: int, unoxidised_px: int, front_px: float | None,
                     shell_percent: float | None,
                     pixel_size_um: float | None) -> dict[str, float | None]:
    """A pellet's oxidation fields (:data:`FIELDS`): its oxidised share (%, from its exact
    hematite and magnetite pixel counts; None without either), its oxidation front depth
    (px, from :func:`front_depth`, and µm where the pixel size (µm/px) is known) and its
    shell share (%, :func:`amount_above`). The front and shell share are None for a pellet
    with no block of the grid (smaller than about half a 16 px block) or no iron oxide in its
    blocks; all four are None for a class table without both classes
    (:func:`oxidation_classes`): call with ``0, 0, None, None``."""
    total = oxidised_px + unoxidised_px
    return dict(zip(FIELDS, (
        100.0 * oxidised_px / total if total else None,
        front_px,
        None if front_px is None or pixel_size_um is None else front_px * pixel_size_um,
        shell_percent,
    ), strict=True))
