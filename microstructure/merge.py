"""Merge of row partials into the ``microstructure.json`` document (version 1).

Components that continue across the seam between consecutive strips are united (8-neighbour
pixels of the same class, or of the same set, on the last row of one strip and the first row
of the next) with ``scipy.sparse.csgraph.connected_components`` over the seam pairs: the
result is exactly the whole-image labelling, whatever the strip heights. Then:

- mount-set components that touch the image border are the mount outside the pellets; the
  others are epoxy inside a pellet outline (open porosity);
- pellets are the groups of pellet-set components joined through the inside mount (filled
  outline), numbered by their bounding box (top, then left);
- radial profiles come from the 16 px block grid and a Euclidean distance transform on it;
- each pellet's oxidation front is solved on the same block grid, where the class table has
  hematite and magnetite (:mod:`microstructure.oxidation`).

Memory: the partials' component tables plus the block grid ((H/16) x (W/16) x C uint16); no
array of image size. See docs/microstructure.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from microstructure.classes import ClassInfo
from microstructure.oxidation import (
    amount_above,
    front_depth,
    oxidation_classes,
    pellet_oxidation,
)
from microstructure.partials import BLOCK, RowPartial, _role_codes

#: Version of the ``microstructure.json`` document.
SCHEMA_VERSION = 1
SCHEMA = "pelletseg.microstructure"


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) int component label of each node of the graph with edges (a[i], b[i])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if a.size == 0:
        return np.arange(n, dtype=np.int64)
    g = coo_matrix((np.ones(a.size, dtype=np.int8), (a.astype(np.int64), b.astype(np.int64))),
                   shape=(n, n)).tocsr()
    _, lab = connected_components(g, directed=False)
    return lab.astype(np.int64)


def _sum_by(lab: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Integer sums of ``values`` (N,) or (N, K) grouped by ``lab`` (N,) into n groups."""
    values = np.asarray(values)
    if values.ndim == 1:
        return np.rint(np.bincount(lab, weights=values, minlength=n)).astype(np.int64)
    return np.stack([_sum_by(lab, values[:, k], n) for k in range(values.shape[1])], axis=1) \
        if values.shape[1] else np.zeros((n, 0), dtype=np.int64)


def _ecd(area_px: np.ndarray | float) -> np.ndarray:
    """Equivalent circle diameter (px) of areas (px²): 2·sqrt(A/π) (ISO 9276-6)."""
    return 2.0 * np.sqrt(np.asarray(area_px, dtype=np.float64) / math.pi)


def _um(v: float | None, ps: float | None, power: int = 1) -> float | None:
    return None if ps is None or v is None else float(v) * ps**power


def _check(parts: list[RowPartial], classes: Sequence[ClassInfo]) -> tuple[int, int]:
    if not parts:
        raise ValueError("no row partials to merge")
    values = np.array([c.value for c in classes], dtype=np.uint8)
    roles = _role_codes(classes)
    W, H = parts[0].width, parts[0].image_height
    expect = 0
    for p in parts:
        if not np.array_equal(p.class_values, values) or not np.array_equal(p.class_roles, roles):
            raise ValueError(f"the partial of rows [{p.y0}, {p.y0 + p.height}) was computed with "
                             "another class table; recompute it")
        if p.width != W or p.image_height != H:
            raise ValueError(f"the partial of rows [{p.y0}, {p.y0 + p.height}) is of a "
                             f"{p.width} x {p.image_height} px image, not {W} x {H}")
        if p.y0 != expect:
            what = "missing" if p.y0 > expect else "covered twice"
            lo, hi = min(p.y0, expect), max(p.y0, expect)
            raise ValueError(f"rows [{lo}, {hi}) are {what} in the row partials")
        expect = p.y0 + p.height
    if expect != H:
        raise ValueError(f"rows [{expect}, {H}) are missing in the row partials")
    return H, W


def _shift(n: int, d: int) -> tuple[slice, slice]:
    """Slices (upper row, lower row) pairing x with x + d (d in -1, 0, 1) over width n."""
    return slice(max(0, -d), n - max(0, d)), slice(max(0, d), n + min(0, d))


def merge_partials(partials: Iterable[RowPartial], *, classes: Sequence[ClassInfo],
                   pixel_size_um: float | None, band_width_um: float = 50.0,
                   min_pellet_area_fraction: float = 0.01) -> dict:
    """Merge the row partials of a label map into the ``microstructure.json`` document.

    Args:
        partials: One :class:`RowPartial` per strip, any order, together covering every row
            exactly once.
        classes: The class table the partials were computed with.
        pixel_size_um: Pixel size (µm/px), or None when unknown (figures then in px only;
            µm and mm fields are null).
        band_width_um: Width of a radial-profile band (µm; px when ``pixel_size_um`` is None).
        min_pellet_area_fraction: A filled pellet-region component smaller than this fraction
            of the largest is a fragment, not a pellet (counted under ``fragments``).

    Returns:
        The document (JSON-serialisable); schema in docs/microstructure.md.

    Raises:
        ValueError: no partials, rows missing or covered twice, partials of another image or
            class table, a non-positive pixel size or band width.
    """
    from scipy import ndimage

    if pixel_size_um is not None and not (pixel_size_um > 0 and math.isfinite(pixel_size_um)):
        raise ValueError(f"pixel size {pixel_size_um!r} µm must be a positive number")
    if not (band_width_um > 0 and math.isfinite(band_width_um)):
        raise ValueError(f"band width {band_width_um!r} must be a positive number")
    classes = list(classes)
    parts = sorted(partials, key=lambda p: p.y0)
    H, W = _check(parts, classes)
    ps = float(pixel_size_um) if pixel_size_um is not None else None
    C = len(classes)
    roles = _role_codes(classes)
    is_mount = roles == 2
    mount_names = [c.name for c in classes if c.role == "mount"]
    pore_names = [c.name for c in classes if c.role == "pore"]
    notes: list[str] = []

    comp_off = np.cumsum([0] + [p.comp_class.size for p in parts])
    set_off = np.cumsum([0] + [p.set_mount.size for p in parts])
    n_comp, n_set = int(comp_off[-1]), int(set_off[-1])
    comp_class = np.concatenate([p.comp_class for p in parts])
    comp_area = np.concatenate([p.comp_area for p in parts])
    comp_border = np.concatenate([p.comp_border for p in parts])
    comp_set = np.concatenate([np.where(p.comp_set >= 0, p.comp_set + set_off[i], -1)
                               for i, p in enumerate(parts)])
    set_mount = np.concatenate([p.set_mount for p in parts])
    set_border = np.concatenate([p.set_border for p in parts])
    set_counts = np.concatenate([p.set_counts.reshape(-1, C) for p in parts])
    set_bbox = np.concatenate([p.set_bbox.reshape(-1, 4) for p in parts])
    class_counts = np.sum([p.class_counts for p in parts], axis=0).astype(np.int64)
    edges = np.sum([p.edges for p in parts], axis=0).astype(np.int64)
    adj = [p.adjacency.astype(np.int64) + set_off[i] for i, p in enumerate(parts)]

    # --- seams: 8-neighbour unions, 4-neighbour edges and adjacency ----------------------
    cpa, cpb, spa, spb = [], [], [], []
    seam_edges = np.zeros(C * C, dtype=np.int64)
    for i in range(len(parts) - 1):
        a, b = parts[i], parts[i + 1]
        lc, fc = a.last_class, b.first_class
        lcomp, fcomp = a.last_comp + comp_off[i], b.first_comp + comp_off[i + 1]
        lset, fset = a.last_set + set_off[i], b.first_set + set_off[i + 1]
        lm, fm = is_mount[lc], is_mount[fc]
        for d in (-1, 0, 1):
            xa, xb = _shift(W, d)
            same = lc[xa] == fc[xb]
            cpa.append(lcomp[xa][same])
            cpb.append(fcomp[xb][same])
            same = lm[xa] == fm[xb]
            spa.append(lset[xa][same])
            spb.append(fset[xb][same])
        diff = lc != fc
        seam_edges += np.bincount(lc[diff].astype(np.int64) * C + fc[diff], minlength=C * C)
        md = lm != fm
        if md.any():
            p_ = np.where(lm[md], fset[md], lset[md])
            q_ = np.where(lm[md], lset[md], fset[md])
            adj.append(np.stack([p_, q_], axis=1).astype(np.int64))
    e = seam_edges.reshape(C, C)
    edges = edges + np.triu(e + e.T, k=1)

    def pairs(x: list[np.ndarray], y: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if not x:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(x).astype(np.int64), np.concatenate(y).astype(np.int64)

    comp_lab = _components(n_comp, *pairs(cpa, cpb))
    set_lab = _components(n_set, *pairs(spa, spb))
    n_cr = int(comp_lab.max()) + 1 if n_comp else 0
    n_sr = int(set_lab.max()) + 1 if n_set else 0

    # merged set components
    s_mount = np.zeros(n_sr, dtype=bool)
    s_mount[set_lab] = set_mount
    s_border = np.bincount(set_lab, weights=set_border, minlength=n_sr) > 0
    s_counts = _sum_by(set_lab, set_counts, n_sr)
    s_outside = s_mount & s_border
    have_mount = bool(is_mount.any())

    # --- pellets: pellet-set components joined through inside mount ---------------------
    pellets: list[dict] = []
    fragments = {"count": 0, "area_px": 0, "area_mm2": None}
    group_pellet = np.zeros(0, dtype=np.int64)  # group -> pellet index (-1: fragment)
    root_group = np.full(n_sr, -1, dtype=np.int64)
    if not have_mount:
        notes.append("no class has role 'mount': the pellet outline is unknown, so there are "
                     "no pellets, no porosity and no radial profiles; class percentages are "
                     "of the image")
    else:
        a_all = np.concatenate(adj) if adj else np.zeros((0, 2), np.int64)
        rp, rm = set_lab[a_all[:, 0]], set_lab[a_all[:, 1]]
        keep = ~s_outside[rm]
        glab = _components(n_sr, rp[keep], rm[keep])
        member = ~s_outside
        # relabel the groups holding members 0..G-1 in order of first appearance
        groups, root_group_m = np.unique(glab[member], return_inverse=True)
        root_group[member] = root_group_m
        G = groups.size
        g_counts = _sum_by(root_group[member], s_counts[member], G) if G else np.zeros((0, C), np.int64)
        g_area = g_counts.sum(axis=1)
        # bounding boxes of the groups from the pellet-set pieces (min/max by sorting)
        sp = np.flatnonzero(~set_mount)
        g_of_piece = root_group[set_lab[sp]]
        bb = set_bbox[sp].astype(np.int64)
        g_bbox = np.zeros((G, 4), dtype=np.int64)
        g_border = np.zeros(G, dtype=bool)
        if sp.size:
            order = np.argsort(g_of_piece, kind="stable")
            gs = g_of_piece[order]
            starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
            gi = gs[starts]
            g_bbox[gi, 0] = np.minimum.reduceat(bb[order, 0], starts)
            g_bbox[gi, 1] = np.minimum.reduceat(bb[order, 1], starts)
            g_bbox[gi, 2] = np.maximum.reduceat(bb[order, 2], starts)
            g_bbox[gi, 3] = np.maximum.reduceat(bb[order, 3], starts)
            g_border[gi] = np.maximum.reduceat(set_border[sp][order].astype(np.int8), starts) > 0
        group_pellet = np.full(G, -1, dtype=np.int64)
        if G:
            big = g_area >= min_pellet_area_fraction * g_area.max()
            idx = np.flatnonzero(big)
            idx = idx[np.lexsort((-g_area[idx], g_bbox[idx, 3], g_bbox[idx, 2],
                                  g_bbox[idx, 1], g_bbox[idx, 0]))]
            group_pellet[idx] = np.arange(idx.size)
            frag = ~big
            frag_px = int(g_area[frag].sum())
            fragments = {"count": int(frag.sum()), "area_px": frag_px,
                         "area_mm2": None if ps is None else frag_px * ps * ps / 1e6}
            pore = roles == 1
            for n_, g in enumerate(idx):
                area = int(g_area[g])
                cnt = g_counts[g]
                open_px = int(cnt[is_mount].sum())
                closed_px = int(cnt[pore].sum())
                y_min, x_min, y_max, x_max = (int(v) for v in g_bbox[g])
                pellets.append({
                    "id": n_ + 1,
                    "area_px": area,
                    "area_mm2": None if ps is None else area * ps * ps / 1e6,
                    "equivalent_diameter_px": float(_ecd(area)),
                    "equivalent_diameter_mm": None if ps is None else float(_ecd(area)) * ps / 1e3,
                    "porosity_open_percent": 100.0 * open_px / area,
                    "porosity_closed_percent": (100.0 * closed_px / area) if pore_names else None,
                    "phase_fractions_percent": {c.name: 100.0 * int(cnt[k]) / area
                                                for k, c in enumerate(classes) if not is_mount[k]},
                    "pixels": {c.name: int(cnt[k]) for k, c in enumerate(classes)},
                    "bbox": {"x": x_min, "y": y_min, "width": x_max - x_min, "height": y_max - y_min},
                    "touches_image_border": bool(g_border[g]),
                })
        if not pore_names:
            notes.append("no class has role 'pore': closed porosity is unknown (null)")

    # --- size distributions (8-connected objects of each class, whole image) -------------
    c_area = _sum_by(comp_lab, comp_area, n_cr)
    c_class = np.zeros(n_cr, dtype=np.int64)
    c_class[comp_lab] = comp_class
    c_border = np.bincount(comp_lab, weights=comp_border, minlength=n_cr) > 0
    c_outside = np.zeros(n_cr, dtype=bool)
    if n_comp:
        has_set = comp_set >= 0
        c_outside[comp_lab[has_set]] = s_outside[set_lab[comp_set[has_set]]]
    size_distributions = {}
    for k, c in enumerate(classes):
        sel = (c_class == k) & ~c_outside
        size_distributions[c.name] = _distribution(c_area[sel], c_border[sel], ps)
        if is_mount[k]:
            size_distributions[c.name]["objects"] = "inside pellet outlines only (open pores)"

    # --- boundaries ----------------------------------------------------------------------
    total_edges = int(np.triu(edges, k=1).sum())
    per_class = edges + edges.T
    boundaries = []
    for a in range(C):
        for b in range(a + 1, C):
            n = int(edges[a, b])
            if n == 0:
                continue
            boundaries.append({
                "a": classes[a].name, "b": classes[b].name, "edges": n,
                "length_px": n, "length_um": _um(n, ps),
                "percent_of_all": 100.0 * n / total_edges,
                "percent_of_a": 100.0 * n / int(per_class[a].sum()),
                "percent_of_b": 100.0 * n / int(per_class[b].sum()),
            })

    band_px = band_width_um / ps if ps is not None else float(band_width_um)
    radial = {
        "band_width_px": band_px,
        "band_width_um": None if ps is None else float(band_width_um),
        "block_px": BLOCK,
        "distance": "from the pellet surface inwards, on the 16 px block grid (approximate)",
        "pellets": [],
    }
    # the oxidation front (hematite shell, magnetite core) where the classes have both
    oxidised = oxidation_classes(classes)
    fronts: list[tuple[float | None, float | None]] = [(None, None)] * len(pellets)
    if have_mount and pellets:
        radial["pellets"], fronts = _radial(parts, classes, H, W, set_off, set_lab, s_outside,
                                            root_group, group_pellet, len(pellets), band_px, ps,
                                            ndimage, oxidised)
    oxidation = None
    if oxidised is not None:
        ox, un = (classes[k].name for k in oxidised)
        oxidation = {"oxidised": ox, "unoxidised": un,
                     "oxidation_front": "thickness of the shell from the pellet surface inwards "
                                        f"that would hold all the pellet's {ox} if the iron "
                                        f"oxides above it were {ox} and those below {un} (16 px "
                                        "blocks; docs/microstructure.md)"}
    for p_, (front, shell) in zip(pellets, fronts, strict=True):
        pixels = [p_["pixels"][classes[k].name] for k in oxidised] if oxidised else [0, 0]
        p_.update(pellet_oxidation(*pixels, front, shell, ps))

    total = H * W
    pellet_px = sum(p["area_px"] for p in pellets)
    class_rows = []
    for k, c in enumerate(classes):
        inside = sum(p_["pixels"][c.name] for p_ in pellets)
        class_rows.append({
            "name": c.name, "value": c.value, "role": c.role,
            "colour": None if c.colour is None else list(c.colour),
            "pixels": int(class_counts[k]),
            "percent_of_image": 100.0 * int(class_counts[k]) / total,
            "percent_of_pellets": (100.0 * inside / pellet_px) if pellet_px else None,
        })
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "image": {"width": W, "height": H, "pixels": total},
        "pixel_size_um": ps,
        "units": "µm" if ps is not None else "px",
        "connectivity": {"objects": 8, "boundaries": 4},
        "mount_class": mount_names[0] if mount_names else None,
        "mount_classes": mount_names,
        "pore_classes": pore_names,
        "notes": notes,
        "classes": class_rows,
        "pellets": pellets,
        "fragments": fragments,
        "size_distributions": size_distributions,
        "boundaries": boundaries,
        "radial_profiles": radial,
        "oxidation": oxidation,
    }


def _quantile_by_area(ecd_sorted: np.ndarray, area_sorted: np.ndarray, q: int) -> float:
    """Smallest ECD such that objects up to it hold >= q % of the total area (exact integers)."""
    cum = np.cumsum(area_sorted)
    i = int(np.argmax(cum * 100 >= q * cum[-1]))
    return float(ecd_sorted[i])


def _distribution(area_px: np.ndarray, border: np.ndarray, ps: float | None) -> dict:
    """Size distribution of objects with areas ``area_px`` (px²)."""
    n = int(area_px.size)
    out: dict = {
        "count": n, "count_touching_image_border": int(border.sum()),
        "weighting": "area", "area_px": int(area_px.sum()), "area_um2": _um(area_px.sum(), ps, 2),
        "d10_px": None, "d50_px": None, "d90_px": None,
        "d10_um": None, "d50_um": None, "d90_um": None,
        "mean_diameter_px": None, "mean_diameter_um": None,
        "bins": [],
    }
    if n == 0:
        return out
    ecd = _ecd(area_px)
    order = np.argsort(ecd, kind="stable")
    e_s, a_s = ecd[order], area_px[order].astype(np.int64)
    for q in (10, 50, 90):
        d = _quantile_by_area(e_s, a_s, q)
        out[f"d{q}_px"] = d
        out[f"d{q}_um"] = _um(d, ps)
    out["mean_diameter_px"] = float(ecd.mean())
    out["mean_diameter_um"] = _um(out["mean_diameter_px"], ps)
    # log-spaced bins, edges 2^(k/2) in the report's unit (µm, or px without a pixel size)
    v = ecd * ps if ps is not None else ecd
    k = np.floor(2.0 * np.log2(v)).astype(np.int64)
    k0, k1 = int(k.min()), int(k.max())
    counts = np.bincount(k - k0, minlength=k1 - k0 + 1)
    areas = np.bincount(k - k0, weights=area_px.astype(np.float64), minlength=k1 - k0 + 1)
    total = float(area_px.sum())
    cum = 0.0
    for j in range(k1 - k0 + 1):
        lo, hi = 2.0 ** ((k0 + j) / 2), 2.0 ** ((k0 + j + 1) / 2)
        cum += areas[j]
        out["bins"].append({
            "from_um": lo if ps is not None else None, "to_um": hi if ps is not None else None,
            "from_px": lo / ps if ps is not None else lo, "to_px": hi / ps if ps is not None else hi,
            "count": int(counts[j]), "area_px": round(float(areas[j])),
            "area_percent": float(100.0 * areas[j] / total),
            "cumulative_area_percent": float(100.0 * cum / total),
        })
    return out


def _radial(parts, classes, H, W, set_off, set_lab, s_outside, root_group, group_pellet,
            n_pellets, band_px, ps, ndimage,
            oxidation: tuple[int, int] | None,
            ) -> tuple[list[dict], list[tuple[float | None, float | None]]]:
    """Per-pellet radial profiles from the partials' block grids (see module docstring), and
    each pellet's oxidation front depth (px) and shell share (%) (None for all without
    ``oxidation``, the indices of the oxidised and unoxidised classes: :func:`_fronts`)."""
    C = len(classes)
    nby, nbx = -(-H // BLOCK), -(-W // BLOCK)
    counts = np.zeros((nby, nbx, C), dtype=np.uint16)
    outside = np.zeros((nby, nbx), dtype=np.int32)
    pel = np.full((nby, nbx), np.iinfo(np.int32).max, dtype=np.int32)
    root_pellet = np.where(root_group >= 0, group_pellet[np.maximum(root_group, 0)], -1)
    for i, p in enumerate(parts):
        r = slice(p.blk_y0, p.blk_y0 + p.blk_counts.shape[0])
        counts[r] += p.blk_counts
        outside[r] += p.blk_outside
        if p.uncertain.size:
            u = p.uncertain
            out_u = s_outside[set_lab[u[:, 1] + set_off[i]]]
            flat = np.bincount(u[out_u, 0], weights=u[out_u, 2], minlength=outside[r].size)
            outside[r] += np.rint(flat).astype(np.int32).reshape(outside[r].shape)
        for ids in (p.blk_set_min, p.blk_set_max):
            has = ids >= 0
            cand = np.full(ids.shape, np.iinfo(np.int32).max, dtype=np.int32)
            pp = root_pellet[set_lab[ids[has] + set_off[i]]]
            cand[has] = np.where(pp >= 0, pp, np.iinfo(np.int32).max)
            np.minimum(pel[r], cand, out=pel[r])
    valid = counts.sum(axis=2, dtype=np.int32)  # <= 256 px per block
    inside = valid - outside
    mask = (inside > 0) & (2 * inside >= valid)
    del valid, inside
    none = np.iinfo(np.int32).max
    # blocks of the pellet region with no pellet-set pixel (all inside epoxy): the pellet
    # most blocks of their block-grid component belong to
    unassigned = mask & (pel == none)
    if unassigned.any():
        comp, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        known = mask & (pel != none)
        votes = np.bincount(comp[known].astype(np.int64) * (n_pellets + 1) + pel[known],
                            minlength=(n + 1) * (n_pellets + 1)).reshape(n + 1, n_pellets + 1)
        best = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), none)
        pel[unassigned] = best[comp[unassigned]]
    use = mask & (pel != none)
    dist = ndimage.distance_transform_edt(mask)  # blocks from the nearest block outside
    dist -= 0.5
    fronts: list[tuple[float | None, float | None]] = [(None, None)] * n_pellets
    if oxidation is not None:
        depth = np.maximum(dist[use] * BLOCK, 0)  # px from the surface
        fronts = _fronts(pel[use], depth, counts[..., oxidation[0]][use],
                         counts[..., oxidation[1]][use], n_pellets)
        del depth
    dist *= BLOCK / band_px  # px from the surface / band width
    np.maximum(dist, 0, out=dist)
    band = np.floor(dist[use]).astype(np.int64)
    del dist
    nb = int(band.max()) + 1 if band.size else 0
    key = pel[use].astype(np.int64) * nb + band
    del band
    cnt = np.stack([np.bincount(key, weights=counts[..., k][use], minlength=n_pellets * nb)
                    for k in range(C)], axis=1)
    out_b = np.bincount(key, weights=outside[use], minlength=n_pellets * nb)
    is_mount = np.array([c.role == "mount" for c in classes])
    profiles = []
    for pi in range(n_pellets):
        bands = []
        for b in range(nb):
            row = cnt[pi * nb + b]
            px = row.sum() - out_b[pi * nb + b]
            if px <= 0:
                continue
            inside_mount = row[is_mount].sum() - out_b[pi * nb + b]
            bands.append({
                "band": b,
                "from_px": float(b * band_px), "to_px": float((b + 1) * band_px),
                "from_um": None if ps is None else b * band_px * ps,
                "to_um": None if ps is None else (b + 1) * band_px * ps,
                "pixels": round(float(px)),
                "percent": {c.name: float(100.0 * row[k] / px) for k, c in enumerate(classes)
                            if not is_mount[k]},
                "open_porosity_percent": float(100.0 * inside_mount / px),
            })
        profiles.append({"pellet": pi + 1, "bands": bands})
    return profiles, fronts


def _fronts(pellet: np.ndarray, depth: np.ndarray, oxidised: np.ndarray, unoxidised: np.ndarray,
            n_pellets: int) -> list[tuple[float | None, float | None]]:
    """Each pellet's ``(front depth, shell share)`` from its blocks
    (:func:`microstructure.oxidation.front_depth`, :func:`~microstructure.oxidation.amount_above`
    of its hematite, % of it)."""
    order = np.argsort(pellet, kind="stable")
    ends = np.cumsum(np.bincount(pellet, minlength=n_pellets))
    oxides = oxidised.astype(np.int32) + unoxidised
    out: list[tuple[float | None, float | None]] = []
    for i in np.split(order, ends[:-1]):
        front = front_depth(depth[i], oxidised[i], oxides[i], BLOCK / 2)
        total = int(oxidised[i].sum(dtype=np.int64))
        shell = (100.0 * amount_above(depth[i], oxidised[i], BLOCK / 2, front) / total
                 if front is not None and total else None)
        out.append((front, shell))
    return out
