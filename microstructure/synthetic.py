"""Synthetic pellet sections with known ground truth, for tests and benchmarks.

A :class:`SyntheticSection` is a description (pellets, pores), rendered strip by strip
(:meth:`SyntheticSection.render`), so a 1-Gpx map never has to be held whole. Each pellet is a
disc of radius R in epoxy (pixel (y, x) is inside when (y - cy)² + (x - cx)² <= R²; pixel
centres at integer coordinates), with a hematite shell of thickness t (pixels with
squared distance > (R - t)²) around a magnetite core; closed pores (class ``pore``) and open
pores (epoxy inside the outline) are axis-aligned rectangles of known size, some U-shaped
(three rectangles: one object that looks like two in the strips holding only its arms), some
epoxy rings around a hematite island (the island belongs to the pellet). Objects of one class
never touch each other (one pixel gap, 8-neighbours), so the truth is analytic: a rectangle
of h x w px is one object of h·w px.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from microstructure.classes import ClassInfo

EPOXY, PORE, HEMATITE, MAGNETITE = 0, 1, 2, 3

#: The class table of synthetic sections.
SYNTHETIC_CLASSES = (
    ClassInfo("epoxy", EPOXY, "mount", (40, 40, 40)),
    ClassInfo("pore", PORE, "pore", (0, 0, 0)),
    ClassInfo("hematite", HEMATITE, "phase", (220, 220, 220)),
    ClassInfo("magnetite", MAGNETITE, "phase", (150, 150, 170)),
)


@dataclass
class Pore:
    """One pore object: rectangles (y, x, h, w) px of one class, drawn in order; ``area_px``
    is the object's area; ``island`` is a hematite rectangle drawn inside it (or None)."""

    value: int
    rects: list[tuple[int, int, int, int]]
    area_px: int
    island: tuple[int, int, int, int] | None = None

    def bbox(self) -> tuple[int, int, int, int]:
        y0 = min(r[0] for r in self.rects)
        x0 = min(r[1] for r in self.rects)
        y1 = max(r[0] + r[2] for r in self.rects)
        x1 = max(r[1] + r[3] for r in self.rects)
        return y0, x0, y1, x1


@dataclass
class Pellet:
    """A disc pellet: centre (px), radius R (px), hematite shell thickness (px), its pores."""

    cy: int
    cx: int
    radius: int
    shell: int
    pores: list[Pore] = field(default_factory=list)

    def pores_in(self, y0: int, y1: int) -> list[Pore]:
        """The pores whose rows meet [y0, y1)."""
        if getattr(self, "_index", None) is None or len(self._index[0]) != len(self.pores):
            tops = np.array([q.bbox()[0] for q in self.pores], dtype=np.int64)
            order = np.argsort(tops, kind="stable")
            self._index = (tops[order], order, max((q.bbox()[2] - q.bbox()[0] for q in self.pores),
                                                   default=0))
        tops, order, tallest = self._index
        lo = int(np.searchsorted(tops, y0 - tallest, side="left"))
        hi = int(np.searchsorted(tops, y1, side="left"))
        return [q for q in (self.pores[i] for i in order[lo:hi]) if q.bbox()[2] > y0]

    def area_px(self) -> int:
        """Pixels of the disc, counted row by row from the definition (no image needed)."""
        y = np.arange(self.cy - self.radius, self.cy + self.radius + 1, dtype=np.int64)
        half = np.floor(np.sqrt(np.maximum(self.radius**2 - (y - self.cy) ** 2, 0))).astype(np.int64)
        return int((2 * half + 1).sum())


@dataclass
class SyntheticSection:
    """A synthetic section: (height, width) px, pellets in epoxy."""

    height: int
    width: int
    pellets: list[Pellet]

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def render(self, y0: int = 0, y1: int | None = None) -> np.ndarray:
        """Rows [y0, y1) of the label map: (y1 - y0, width) uint8 class values."""
        y1 = self.height if y1 is None else y1
        out = np.full((y1 - y0, self.width), EPOXY, dtype=np.uint8)
        for p in self.pellets:
            a, b = max(y0, p.cy - p.radius), min(y1, p.cy + p.radius + 1)
            if a >= b:
                continue
            c0, c1 = max(0, p.cx - p.radius), min(self.width, p.cx + p.radius + 1)
            yy = np.arange(a, b, dtype=np.int64)[:, None] - p.cy
            xx = np.arange(c0, c1, dtype=np.int64)[None, :] - p.cx
            d2 = yy * yy + xx * xx
            view = out[a - y0:b - y0, c0:c1]
            view[d2 <= (p.radius - p.shell) ** 2] = MAGNETITE
            view[(d2 <= p.radius**2) & (d2 > (p.radius - p.shell) ** 2)] = HEMATITE
            for pore in p.pores_in(y0, y1):
                for ry, rx, rh, rw in pore.rects:
                    _fill(out, y0, ry, rx, rh, rw, pore.value)
                if pore.island is not None:
                    _fill(out, y0, *pore.island, HEMATITE)
        return out

    def truth(self) -> dict:
        """The figures the analysis must find: per pellet (in order of bounding box: top, then
        left) area, open and closed pore pixels; object areas of the pore class and of the
        open pores; the shell thickness (px)."""
        pellets = sorted(self.pellets, key=lambda p: (p.cy - p.radius, p.cx - p.radius))
        rows = []
        for p in pellets:
            rows.append({
                "area_px": p.area_px(),
                "radius_px": p.radius,
                "shell_px": p.shell,
                "closed_px": sum(q.area_px for q in p.pores if q.value == PORE),
                "open_px": sum(q.area_px for q in p.pores if q.value == EPOXY),
            })
        return {
            "pellets": rows,
            "pore_areas_px": sorted(q.area_px for p in self.pellets for q in p.pores if q.value == PORE),
            "open_pore_areas_px": sorted(q.area_px for p in self.pellets for q in p.pores
                                         if q.value == EPOXY),
        }


def _fill(out: np.ndarray, y0: int, ry: int, rx: int, rh: int, rw: int, value: int) -> None:
    a, b = max(ry, y0), min(ry + rh, y0 + out.shape[0])
    if a < b:
        out[a - y0:b - y0, rx:rx + rw] = value


def _inside(p: Pellet, y0: int, x0: int, y1: int, x1: int, margin: int) -> bool:
    """The box [y0, y1) x [x0, x1) lies inside the disc, ``margin`` px from its edge."""
    r = p.radius - margin
    for y, x in ((y0, x0), (y0, x1 - 1), (y1 - 1, x0), (y1 - 1, x1 - 1)):
        if (y - p.cy) ** 2 + (x - p.cx) ** 2 > r * r:
            return False
    return True


def _pore_shapes(rng: np.random.Generator, y: int, x: int, kind: str, s: int) -> Pore:
    if kind == "u":  # U: two arms of s x 3 px joined by a 3 x (s + 3) bar at the bottom
        arms = [(y, x, s, 3), (y, x + s, s, 3)]
        bar = (y + s, x, 3, s + 3)
        return Pore(PORE, [*arms, bar], 2 * s * 3 + 3 * (s + 3))
    if kind == "ring":  # epoxy ring of width 2 around a hematite island
        return Pore(EPOXY, [(y, x, s, s)], s * s - (s - 4) * (s - 4), island=(y + 2, x + 2, s - 4, s - 4))
    h = int(rng.integers(max(1, s // 2), s + 1))
    w = int(rng.integers(max(1, s // 2), s + 1))
    return Pore(PORE if kind == "closed" else EPOXY, [(y, x, h, w)], h * w)


def make_section(height: int, width: int, pellets: list[tuple[int, int, int, int]], *,
                 pores_per_pellet: int = 20, max_pore_px: int = 12, seed: int = 0,
                 pore_spacing: int | None = None) -> SyntheticSection:
    """A section with the given pellets ``(cy, cx, radius, shell)`` (px) and random
    non-touching pores in each: closed rectangles, open (epoxy) rectangles, U-shaped closed
    pores and epoxy rings around hematite islands (about 1/2, 1/4, 1/8, 1/8), at least 4 px
    inside the pellet surface.

    ``pore_spacing`` (px, > max_pore_px + 5): instead of ``pores_per_pellet`` pores placed at
    random, one pore in each cell of a grid of this pitch that lies inside the pellet
    (fast for large sections: no overlap search).

    Raises:
        ValueError: a pellet leaves the image or pellets touch (one pixel gap is needed).
    """
    rng = np.random.default_rng(seed)
    out: list[Pellet] = []
    for cy, cx, r, t in pellets:
        if cy - r < 0 or cx - r < 0 or cy + r >= height or cx + r >= width:
            raise ValueError(f"pellet at ({cy}, {cx}) radius {r} leaves the {height} x {width} image")
        if not 0 < t < r:
            raise ValueError(f"shell {t} px must be in (0, {r}) px")
        for q in out:
            if (q.cy - cy) ** 2 + (q.cx - cx) ** 2 <= (q.radius + r + 2) ** 2:
                raise ValueError(f"pellets at ({q.cy}, {q.cx}) and ({cy}, {cx}) touch")
        p = Pellet(cy, cx, r, t)
        if pore_spacing is not None:
            if pore_spacing <= max_pore_px + 5:
                raise ValueError(f"pore_spacing {pore_spacing} px must exceed max_pore_px + 5")
            kinds = ["closed", "open", "closed", "u", "closed", "ring", "open", "closed"]
            for i, gy in enumerate(range(cy - r, cy + r, pore_spacing)):
                for j, gx in enumerate(range(cx - r, cx + r, pore_spacing)):
                    kind = kinds[(i * 7 + j) % len(kinds)]
                    s = int(rng.integers(6 if kind in ("u", "ring") else 1, max_pore_px + 1))
                    y = gy + 1 + int(rng.integers(0, pore_spacing - max_pore_px - 4))
                    x = gx + 1 + int(rng.integers(0, pore_spacing - max_pore_px - 4))
                    pore = _pore_shapes(rng, y, x, kind, s)
                    if _inside(p, *pore.bbox(), 4):
                        p.pores.append(pore)
            out.append(p)
            continue
        taken: list[tuple[int, int, int, int]] = []
        kinds = ["closed", "open", "closed", "u", "closed", "ring", "open", "closed"]
        tries = 0
        while len(p.pores) < pores_per_pellet and tries < pores_per_pellet * 200:
            tries += 1
            kind = kinds[len(p.pores) % len(kinds)]
            s = int(rng.integers(6 if kind in ("u", "ring") else 1, max_pore_px + 1))
            y = int(rng.integers(cy - r, cy + r))
            x = int(rng.integers(cx - r, cx + r))
            pore = _pore_shapes(rng, y, x, kind, s)
            by0, bx0, by1, bx1 = pore.bbox()
            if not _inside(p, by0, bx0, by1, bx1, 4):
                continue
            if any(by0 - 2 < b[2] and b[0] < by1 + 2 and bx0 - 2 < b[3] and b[1] < bx1 + 2
                   for b in taken):
                continue
            taken.append((by0, bx0, by1, bx1))
            p.pores.append(pore)
        out.append(p)
    return SyntheticSection(height, width, out)


def demo_section(seed: int = 0) -> SyntheticSection:
    """A small section (320 x 460 px): three pellets of radius 115, 85 and 60 px with shells
    of 30, 25 and 20 px, pores crossing any row and tile boundary."""
    return make_section(320, 460, [(135, 125, 115, 30), (95, 350, 85, 25), (250, 350, 60, 20)],
                        pores_per_pellet=25, seed=seed)
