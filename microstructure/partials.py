"""Row partials: what one strip of a label map contributes to the microstructure figures, small
enough to store beside a row checkpoint and exact enough that the merge
(:mod:`microstructure.merge`) gives the same figures as a whole-image computation.

Per strip (rows ``[y0, y0 + h)``, full width) a :class:`RowPartial` holds:

- the 8-connected components of each class (objects): class, area (px), whether they touch
  the image border, and, for mount classes, the mount region they lie in;
- the 8-connected components of the two *sets*: the pellet set (all non-mount classes) and the
  mount set (all mount classes): per-class pixel counts, bounding box, image-border contact,
  and the pairs (pellet-set component, mount-set component) that touch (4-neighbours);
- the first and last rows' classes and component ids, so the merge unites components across
  the seam between consecutive strips (a pore crossing five strips is one object);
- the count of 4-neighbour pixel edges between each pair of classes inside the strip;
- per 16 x 16 px block of the global block grid: class counts, mount pixels known to be
  outside the pellets, and the pellet-set components present (radial profiles).

Nothing here loops over pixels in Python: components by ``scipy.ndimage.label``, counts by
``np.bincount``, boxes by ``scipy.ndimage.find_objects``, the block grid by reductions of reshaped
views (:func:`_blocks`); the pixel passes after the labelling run per group of :data:`_ROWS`
rows, which bounds their temporaries.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from microstructure.classes import ClassInfo

#: Version of the serialised partial (:meth:`RowPartial.to_bytes`).
PARTIAL_VERSION = 1
#: Edge of a block of the radial-profile grid (px); block rows and columns are aligned on the
#: image (block (i, j) covers rows 16i..16i+15, columns 16j..16j+15), whatever the strips.
BLOCK = 16
_EIGHT = np.ones((3, 3), dtype=bool)
_NONE = np.iinfo(np.int32).max
_ROWS = 128  # rows per group of the counts, edges and pairs (a multiple of BLOCK)


@dataclass
class RowPartial:
    """A strip's contribution to the microstructure of an image (see the module docstring).

    Ids: ``comp_*`` arrays index the strip's class components (0..Nc-1); ``set_*`` arrays
    index its set components (0..Ns-1: pellet-set and mount-set components, told apart by
    ``set_mount``). Rows ``first_*``/``last_*`` are (W,) arrays of the strip's first and last
    image rows. Block arrays cover block rows ``blk_y0 .. blk_y0 + nby - 1`` (only the strip's
    own pixels are counted in them).

    Attributes:
        y0, height, width, image_height: The strip's first row, rows, width (px), and the
            image's height (px).
        class_values: (C,) uint8 label values of the classes, in class-table order.
        class_roles: (C,) uint8 0 = phase, 1 = pore, 2 = mount.
        class_counts: (C,) int64 pixels of each class.
        comp_class: (Nc,) uint8 class position; comp_area (Nc,) int64 px;
            comp_border (Nc,) bool touches the image border; comp_set (Nc,) int32 the set
            component holding it.
        set_mount: (Ns,) bool; set_counts (Ns, C) int64; set_bbox (Ns, 4) int32 global
            (y_min, x_min, y_max + 1, x_max + 1); set_border (Ns,) bool.
        adjacency: (E, 2) int32 unique (pellet-set id, mount-set id) pairs that are
            4-neighbours somewhere in the strip.
        first_class, last_class: (W,) uint8 class positions; first_comp, last_comp,
            first_set, last_set: (W,) int32 ids.
        edges: (C, C) int64, ``edges[a, b]`` (a < b) = 4-neighbour pixel edges between
            classes a and b inside the strip (upper triangle; the rest is 0).
        blk_y0: first block row; blk_counts (nby, nbx, C) uint16; blk_outside (nby, nbx)
            uint16 mount pixels of set components that touch the image border in this
            strip; blk_set_min, blk_set_max (nby, nbx) int32 smallest/largest pellet-set id
            in the block (-1: none); uncertain (K, 3) int64 (flat block index, set id,
            pixels) for mount-set components that reach a seam but not the image border in
            this strip (whether they lie outside is known only after the merge).
    """

    y0: int
    height: int
    width: int
    image_height: int
    class_values: np.ndarray
    class_roles: np.ndarray
    class_counts: np.ndarray
    comp_class: np.ndarray
    comp_area: np.ndarray
    comp_border: np.ndarray
    comp_set: np.ndarray
    set_mount: np.ndarray
    set_counts: np.ndarray
    set_bbox: np.ndarray
    set_border: np.ndarray
    adjacency: np.ndarray
    first_class: np.ndarray
    last_class: np.ndarray
    first_comp: np.ndarray
    last_comp: np.ndarray
    first_set: np.ndarray
    last_set: np.ndarray
    edges: np.ndarray
    blk_y0: int
    blk_counts: np.ndarray
    blk_outside: np.ndarray
    blk_set_min: np.ndarray
    blk_set_max: np.ndarray
    uncertain: np.ndarray

    _SCALARS = ("y0", "height", "width", "image_height", "blk_y0")

    def to_bytes(self) -> bytes:
        """Serialise as an uncompressed ``.npz`` (versioned; no pickles). The bytes depend
        only on the contents (fixed zip timestamps), so a row run twice writes the same file."""
        buf = io.BytesIO()
        arrays = {"__version__": np.int64(PARTIAL_VERSION)}
        arrays.update({f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with z.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RowPartial:
        """Read a partial written by :meth:`to_bytes`.

        Raises:
            ValueError: not a partial, damaged, or written by another version.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # numpy raises many kinds of errors on bad input
            raise ValueError(f"not a microstructure row partial ({type(e).__name__}: {e})") from None
        version = arrays.pop("__version__", None)
        if version is None or int(version) != PARTIAL_VERSION:
            raise ValueError(f"row partial version {None if version is None else int(version)}; "
                             f"this code reads version {PARTIAL_VERSION}: recompute the rows")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"row partial is missing {', '.join(missing)}")
        kwargs = {n: (int(arrays[n]) if n in cls._SCALARS else arrays[n]) for n in names}
        return cls(**kwargs)


def _role_codes(classes: Sequence[ClassInfo]) -> np.ndarray:
    return np.array([{"phase": 0, "pore": 1, "mount": 2}[c.role] for c in classes], dtype=np.uint8)


def class_lut(classes: Sequence[ClassInfo]) -> np.ndarray:
    """(256,) int16 map label value -> class position (-1: not a class).

    Raises:
        ValueError: no classes, or two classes with one value.
    """
    if not classes:
        raise ValueError("the class table is empty")
    lut = np.full(256, -1, dtype=np.int16)
    for i, c in enumerate(classes):
        if lut[c.value] >= 0:
            raise ValueError(f"classes {classes[lut[c.value]].name!r} and {c.name!r} share value {c.value}")
        lut[c.value] = i
    return lut


def _block_rows(a: np.ndarray, y0: int, ufunc: np.ufunc, dtype=None) -> np.ndarray:
    """``ufunc``-reduce the rows of a strip (first row = image row ``y0``) per block row of the
    global grid: (h, W) -> (nby, W). Whole block rows are reduced as one reshaped view (no copy);
    block rows cut by the strip's first or last row are reduced on their own."""
    h, w = a.shape
    parts, r = [], 0
    if y0 % BLOCK:
        r = min(h, BLOCK - y0 % BLOCK)
        parts.append(ufunc.reduce(a[:r], axis=0, dtype=dtype, keepdims=True))
    full = (h - r) // BLOCK
    if full:
        body = a[r:r + full * BLOCK].reshape(full, BLOCK, w)
        parts.append(ufunc.reduce(body, axis=1, dtype=dtype))
        r += full * BLOCK
    if r < h:
        parts.append(ufunc.reduce(a[r:], axis=0, dtype=dtype, keepdims=True))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _blocks(a: np.ndarray, y0: int, ufunc: np.ufunc, fill, dtype=None) -> np.ndarray:
    """``ufunc``-reduce a strip (first row = image row ``y0``) per 16 x 16 px block of the
    global grid: (h, W) -> (nby, nbx); ``fill`` (the reduction's neutral value) pads the last
    block column."""
    rows = _block_rows(a, y0, ufunc, dtype)
    nby, w = rows.shape
    pad = -w % BLOCK
    if pad:
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=fill)
    return ufunc.reduce(rows.reshape(nby, -1, BLOCK), axis=2, dtype=dtype)


def _border_ids(lab: np.ndarray, top: bool, bottom: bool) -> np.ndarray:
    parts = [lab[:, 0], lab[:, -1]]
    if top:
        parts.append(lab[0])
    if bottom:
        parts.append(lab[-1])
    ids = np.unique(np.concatenate(parts))
    return ids[ids > 0]


def row_partial(labels: np.ndarray, *, y0: int, image_shape: tuple[int, int],
                classes: Sequence[ClassInfo]) -> RowPartial:
    """The microstructure partial of one strip of a label map.

    Objects are 8-connected components of one class; boundaries are 4-neighbour pixel edges.

    Args:
        labels: (h, W) uint8 label values (the strip's core rows, no halo), first row = image
            row ``y0``.
        y0: Image row of the strip's first row (px).
        image_shape: (H, W) of the whole label map (px).
        classes: The class table (every value in ``labels`` must be one of its values).

    Returns:
        The strip's :class:`RowPartial`.

    Raises:
        ValueError: ``labels`` is not a 2-D uint8 array, is empty, its width is not W, its rows
            fall outside ``[0, H)``, or it holds a value that no class has.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be an (h, W) uint8 strip, got {labels.dtype} {labels.shape}")
    H, W = (int(v) for v in image_shape)
    h, w = labels.shape
    if h == 0 or w == 0:
        raise ValueError(f"empty strip {labels.shape}")
    if w != W:
        raise ValueError(f"strip width {w} px != image width {W} px")
    if y0 < 0 or y0 + h > H:
        raise ValueError(f"strip rows [{y0}, {y0 + h}) fall outside the image's {H} rows")
    lut = class_lut(classes)
    C = len(classes)
    if np.array_equal(lut[:C], np.arange(C)) and int(labels.max()) < C:
        # label values are the class positions (the usual table): no lookup, which would
        # copy the strip to intp first (~0.1 s per 31 Mpx strip); ``cls`` is only read
        cls = labels
    else:
        cls = np.take(lut.astype(np.uint8), labels)  # -1 (no class) becomes 255: no position < 256
        if C < 256 and (cls == 255).any():
            bad = np.unique(labels[cls == 255])[:10].tolist()
            raise ValueError(f"label values {bad} at rows [{y0}, {y0 + h}) belong to no class "
                             f"(classes: {', '.join(f'{c.name}={c.value}' for c in classes)})")
    roles = _role_codes(classes)
    is_mount_cls = roles == 2
    top, bottom = y0 == 0, y0 + h == H
    # (a comparison per class costs less than a bincount, which copies the strip to intp)
    class_counts = np.array([np.count_nonzero(cls == k) for k in range(C)], dtype=np.int64)

    # --- set components (8-connected): pellet set (non-mount classes) and mount set ------
    # (one comparison per mount class, not a lookup by class nor np.isin, which makes the
    # same intp copy again)
    mmask = np.zeros((h, W), dtype=bool)
    for k in np.flatnonzero(is_mount_cls):
        mmask |= cls == k
    sid = np.zeros((h, W), dtype=np.int32)
    buf = np.zeros((h, W), dtype=np.int32)
    n_p = ndimage.label(~mmask, structure=_EIGHT, output=sid)
    n_m = ndimage.label(mmask, structure=_EIGHT, output=buf)
    np.add(buf, n_p, out=buf, where=mmask)
    np.copyto(sid, buf, where=mmask)
    n_set = n_p + n_m
    set_mount = np.zeros(n_set, dtype=bool)
    set_mount[n_p:] = True
    set_border = np.zeros(n_set, dtype=bool)
    set_border[_border_ids(sid, top, bottom) - 1] = True
    slices = ndimage.find_objects(sid)
    set_bbox = np.array([[s[0].start + y0, s[1].start, s[0].stop + y0, s[1].stop] for s in slices],
                        dtype=np.int32).reshape(-1, 4)
    sid -= 1  # 0-based set ids; every pixel has one

    touches_seam = np.zeros(n_set, dtype=bool)
    if not top:
        touches_seam[np.unique(sid[0])] = True
    if not bottom:
        touches_seam[np.unique(sid[-1])] = True
    outside_sure = set_mount & set_border
    any_outside = bool(outside_sure.any())
    all_outside = bool(outside_sure[n_p:].all())  # then the mount pixels are the outside ones
    unsure = set_mount & ~set_border & touches_seam
    any_unsure = bool(unsure.any())

    # --- per group of block rows: block grid, set counts, edges, adjacency, uncertain ----
    nbx = -(-W // BLOCK)
    by0, by1 = y0 // BLOCK, (y0 + h - 1) // BLOCK
    nby = by1 - by0 + 1
    blk_counts = np.zeros((nby, nbx, C), dtype=np.uint16)
    blk_outside = np.zeros((nby, nbx), dtype=np.uint16)
    blk_set_min = np.full((nby, nbx), -1, dtype=np.int32)
    blk_set_max = np.full((nby, nbx), -1, dtype=np.int32)
    set_counts = np.zeros(n_set * C, dtype=np.int64)
    edges = np.zeros(C * C, dtype=np.int64)
    pairs: list[np.ndarray] = []
    uncertain_parts: list[np.ndarray] = []
    xb = (np.arange(W) // BLOCK).astype(np.int64)
    group = _ROWS // BLOCK  # block rows per group: a group's temporaries are _ROWS rows
    for g in range(0, nby, group):
        r0 = max((by0 + g) * BLOCK, y0) - y0
        r1 = min((by0 + g + group) * BLOCK, y0 + h) - y0
        c = cls[r0:r1]
        s = sid[r0:r1]
        m = mmask[r0:r1]
        blk = slice(g, -(-(y0 + r1) // BLOCK) - by0)  # the group's block rows
        # pellet-set ids (0 .. n_p - 1) are all below mount-set ids, so a block's smallest id
        # is its smallest pellet-set id whenever it holds a pellet pixel
        mn = _blocks(s, y0 + r0, np.minimum, _NONE)
        blk_set_min[blk] = np.where(mn >= n_p, -1, mn)
        blk_set_max[blk] = _blocks(np.where(m, -1, s), y0 + r0, np.maximum, -1)
        if any_outside:
            outside = m if all_outside else np.take(outside_sure, s)
            blk_outside[blk] = _blocks(outside.view(np.uint8), y0 + r0, np.add, 0, np.uint16)
        set_counts += np.bincount((s.astype(np.int64) * C + c).ravel(), minlength=n_set * C)
        if any_unsure:
            u = np.take(unsure, s)
            if u.any():
                # key (flat block index, set id), sorted: block rows in order, as the merge reads
                bi = (np.arange(y0 + r0, y0 + r1) // BLOCK - by0).astype(np.int64)
                flat = bi[:, None] * nbx + xb[None, :]
                key = flat[u] * n_set + s[u]
                keys, cnt = np.unique(key, return_counts=True)
                uncertain_parts.append(np.stack([keys // n_set, keys % n_set, cnt],
                                                axis=1).astype(np.int64))
        # 4-neighbour edges: horizontal inside these rows, vertical from the row above
        ha, hb = c[:, :-1], c[:, 1:]
        d = ha != hb
        edges += np.bincount(ha[d].astype(np.int64) * C + hb[d], minlength=C * C)
        hm = m[:, :-1] != m[:, 1:]
        if hm.any():
            pairs.append(_set_pairs(s[:, :-1][hm], s[:, 1:][hm], m[:, :-1][hm]))
        if r1 - r0 > 1 or r0 > 0:
            lo = r0 - 1 if r0 > 0 else r0
            va, vb = cls[lo:r1 - 1], cls[lo + 1:r1]
            d = va != vb
            edges += np.bincount(va[d].astype(np.int64) * C + vb[d], minlength=C * C)
            ma, mb = mmask[lo:r1 - 1], mmask[lo + 1:r1]
            vm = ma != mb
            if vm.any():
                pairs.append(_set_pairs(sid[lo:r1 - 1][vm], sid[lo + 1:r1][vm], ma[vm]))
    set_counts = set_counts.reshape(n_set, C)

    # --- class components (8-connected), one class at a time ----------------------------
    first_comp = np.zeros(W, dtype=np.int32)
    last_comp = np.zeros(W, dtype=np.int32)
    comp_class, comp_area, comp_border, comp_set = [], [], [], []
    n_mount_classes = int(is_mount_cls.sum())
    offset = 0
    for k in range(C):
        if class_counts[k] == 0:
            continue
        mask = cls == k
        blk_counts[:, :, k] = _blocks(mask.view(np.uint8), y0, np.add, 0, np.uint16)
        if is_mount_cls[k] and n_mount_classes == 1:
            # the mount set is this class: same mask, same 8-connected labelling, so its
            # components are the mount-set components (ids n_p .. n_set - 1 in sid), whose
            # areas and border contacts are known already
            comp_class.append(np.full(n_m, k, dtype=np.uint8))
            comp_area.append(set_counts[n_p:, k].copy())
            comp_border.append(set_border[n_p:].copy())
            comp_set.append(np.arange(n_p, n_set, dtype=np.int32))
            first_comp[mask[0]] = sid[0][mask[0]] - n_p + offset
            last_comp[mask[-1]] = sid[-1][mask[-1]] - n_p + offset
            offset += n_m
            continue
        n = ndimage.label(mask, structure=_EIGHT, output=buf)
        to_set = np.full(n, -1, dtype=np.int32)
        if is_mount_cls[k]:  # each component lies in one set component
            for r in range(0, h, _ROWS):
                mk = mask[r:r + _ROWS]
                to_set[buf[r:r + _ROWS][mk] - 1] = sid[r:r + _ROWS][mk]
        area = np.zeros(n + 1, dtype=np.int64)
        for r in range(0, h, _ROWS):  # bounded temporaries: a few rows at a time
            area += np.bincount(buf[r:r + _ROWS][mask[r:r + _ROWS]], minlength=n + 1)
        area = area[1:]
        border = np.zeros(n, dtype=bool)
        border[_border_ids(buf, top, bottom) - 1] = True
        first_comp[mask[0]] = buf[0][mask[0]] - 1 + offset
        last_comp[mask[-1]] = buf[-1][mask[-1]] - 1 + offset
        comp_class.append(np.full(n, k, dtype=np.uint8))
        comp_area.append(area)
        comp_border.append(border)
        comp_set.append(to_set)
        offset += n
    del buf, mask

    e = edges.reshape(C, C)
    e = np.triu(e + e.T, k=1)
    adjacency = (np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, dtype=np.int64))
    adjacency = np.stack([adjacency // _STRIDE, adjacency % _STRIDE], axis=1).astype(np.int32)
    uncertain = (np.concatenate(uncertain_parts) if uncertain_parts
                 else np.zeros((0, 3), dtype=np.int64))

    return RowPartial(
        y0=int(y0), height=int(h), width=int(W), image_height=int(H),
        class_values=np.array([c.value for c in classes], dtype=np.uint8),
        class_roles=roles,
        class_counts=class_counts,
        comp_class=np.concatenate(comp_class) if comp_class else np.zeros(0, np.uint8),
        comp_area=np.concatenate(comp_area) if comp_area else np.zeros(0, np.int64),
        comp_border=np.concatenate(comp_border) if comp_border else np.zeros(0, bool),
        comp_set=np.concatenate(comp_set) if comp_set else np.zeros(0, np.int32),
        set_mount=set_mount, set_counts=set_counts, set_bbox=set_bbox,
        set_border=set_border, adjacency=adjacency,
        first_class=cls[0].copy(), last_class=cls[-1].copy(),
        first_comp=first_comp, last_comp=last_comp,
        first_set=sid[0].copy(), last_set=sid[-1].copy(),
        edges=e, blk_y0=int(by0), blk_counts=blk_counts, blk_outside=blk_outside,
        blk_set_min=blk_set_min, blk_set_max=blk_set_max, uncertain=uncertain,
    )


def _set_pairs(a: np.ndarray, b: np.ndarray, a_is_mount: np.ndarray) -> np.ndarray:
    """Unique keys ``pellet_set * 2**31 + mount_set`` of neighbouring pixels (a, b) that lie
    in different sets (``a_is_mount``: which of the two is the mount pixel)."""
    p = np.where(a_is_mount, b, a).astype(np.int64)
    q = np.where(a_is_mount, a, b).astype(np.int64)
    return np.unique(p * _STRIDE + q)


_STRIDE = np.int64(1) << 31
