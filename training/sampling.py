"""Training patches: class-balanced random crops and their augmentation.

Augmentation uses ``torchvision.transforms.v2`` (BSD, maintained with PyTorch, already a pinned
dependency): its geometric transforms move an image and its ``tv_tensors.Mask`` together
(nearest-neighbour for the mask), photometric ones touch only the image. ``albumentations``
was considered and not taken: its last MIT release (2.0.8, May 2025) is no longer maintained
(albumentations-team/albumentations#2570) and its successor AlbumentationsX is AGPL, which an
Apache-2.0 project cannot depend on; it would also add OpenCV (~60 MB) for nothing we need.

Randomness: crop positions come from a ``numpy.random.Generator`` and augmentation parameters
from torch's global generator; both are seeded by :func:`training.trainer.train` and saved in
its checkpoints, so a resumed run draws the same patches as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from training.importers import IGNORE

Augment = Literal["none", "geometric", "default", "luminance", "photometric"]
AUGMENTS = ("none", "geometric", "default", "luminance", "photometric")
#: What surrounds a training image: ``none`` (patches hold image pixels only) or ``halo``
#: (the reflect padding serving puts around an image, see :func:`pad_as_served`).
BORDERS = ("none", "halo")


def pad_as_served(image: np.ndarray, mask: np.ndarray, border: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """An image and its mask with the border serving gives every image: ``border`` px of
    reflect padding on each side (numpy ``mode="reflect"``, as
    :mod:`worker.engine.tiling` pads with a border of the halo), the mask's border
    :data:`~training.importers.IGNORE` (the mirrored pixels are context, not labels).

    Patches that reach into the border then show the model what tiles at an image's edge
    show it when it serves (at input scale 0.125 the halo is 64 of a LumenStone image's
    ~420 model px: docs/models.md, run 34).

    Args:
        image: (H, W, 3) uint8. mask: (H, W) uint8 class indices.
        border: px (>= 0) on each side.

    Returns:
        ((H + 2b, W + 2b, 3) uint8, (H + 2b, W + 2b) uint8).

    Raises:
        ValueError: ``border`` < 0, or the image and mask differ in (H, W).
    """
    if border < 0:
        raise ValueError(f"border must be >= 0 px, got {border}")
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    if border == 0:
        return image, mask
    mode = "reflect" if min(image.shape[:2]) > 1 else "edge"
    padded = np.pad(image, [(border, border), (border, border), (0, 0)], mode=mode)
    return padded, np.pad(mask, border, constant_values=IGNORE)


def build_augmentation(kind: Augment = "default"):
    """The ``torchvision.transforms.v2`` pipeline for square patches, or None for ``none``.

    - ``geometric``: horizontal and vertical flips, rotation by 0/90/180/270 degrees (the
      dihedral group D4; torchvision rotates square inputs by 90-degree multiples exactly,
      with ``torch.rot90``).
    - ``default``: ``geometric`` plus, with probability 0.5, brightness and contrast jitter
      of +-10 % (illumination differences between micrographs; hue and saturation are left
      alone because reflectance colour identifies ore phases) and, with probability 0.2, a
      3 x 3 Gaussian blur with sigma 0.1-1.0 px (focus).
    - ``luminance``: ``geometric`` plus, with probability 0.8, brightness and contrast jitter
      of +-25 % (the same gain on the three channels, so a pixel's R:G:B ratios, which tell
      chalcopyrite from pyrrhotite, are kept while its absolute brightness stops naming the
      phase), and the blur of ``default``.
    - ``photometric``: ``geometric`` plus, with probability 0.8, brightness and contrast
      jitter of +-30 % and a gain per channel of +-8 % (white balance), and the blur of
      ``default``: the illumination and white balance vary between sections more than the
      reflectance of the sulphides differs (docs/models.md), so the model must compare a
      grain with its neighbours rather than read its absolute colour. Hue and saturation as
      such are still left alone.

    Raises:
        ValueError: unknown ``kind``.
    """
    from torchvision.transforms import v2

    if kind not in AUGMENTS:
        raise ValueError(f"augmentation must be one of {AUGMENTS}, got {kind!r}")
    if kind == "none":
        return None
    steps = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
             v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)])]
    if kind == "default":
        steps += [v2.RandomApply([v2.ColorJitter(brightness=0.1, contrast=0.1)], p=0.5),
                  v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2)]
    if kind == "luminance":
        steps += [v2.RandomApply([v2.ColorJitter(brightness=0.25, contrast=0.25)], p=0.8),
                  v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2)]
    if kind == "photometric":
        from torchvision import tv_tensors

        steps += [v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.3),
                                  v2.Lambda(_channel_gain, tv_tensors.Image)], p=0.8),
                  v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2)]
    return v2.Compose(steps)


def _channel_gain(image, spread: float = 0.08):
    """(3, P, P) uint8 image times a gain per channel drawn from [1 - spread, 1 + spread]."""
    import torch

    gain = 1.0 + (torch.rand(image.shape[0], 1, 1) * 2 - 1) * spread
    return (image.float() * gain).round().clamp(0, 255).to(torch.uint8)


def apply_augmentation(transform, img: np.ndarray, mask: np.ndarray):
    """Run ``transform`` (from :func:`build_augmentation`) on one patch.

    Args:
        img: (P, P, 3) uint8 RGB.
        mask: (P, P) uint8 class indices, or (P, P, C) uint8 class fractions (moved as C
            mask planes).

    Returns:
        ((P, P, 3) uint8, ``mask``'s shape and dtype), contiguous.
    """
    if transform is None:
        return np.ascontiguousarray(img), np.ascontiguousarray(mask)
    import torch
    from torchvision import tv_tensors

    # np.array copies: crops of read-only decoded images become writable tensors.
    t_img = tv_tensors.Image(torch.from_numpy(np.array(img)).permute(2, 0, 1))
    planes = mask.ndim == 3
    m = torch.from_numpy(np.array(mask))
    t_mask = tv_tensors.Mask(m.permute(2, 0, 1) if planes else m[None])
    out_img, out_mask = transform(t_img, t_mask)
    return (np.ascontiguousarray(out_img.permute(1, 2, 0).numpy()),
            np.ascontiguousarray(out_mask.permute(1, 2, 0).numpy() if planes
                                 else out_mask[0].numpy()))


class PatchSampler:
    """Random square patches of ``patch`` px from in-memory (image, mask) pairs.

    A fraction ``p_targeted`` of the patches is centred (+- patch/4) on a pixel of a class
    drawn uniformly among the classes present, which over-samples rare classes (a class of
    0.3 % of the pixels still fills about p_targeted / C of the patch centres); the rest are
    uniform crops. Up to ``max_coords`` pixel positions per class and image are kept.

    Args:
        data: list of ((H, W, 3) uint8, (H, W) uint8 class indices, :data:`IGNORE` allowed).
        n_classes: Number of classes C.
        patch: Patch edge P (px).
        rng: numpy Generator for positions (consumed here and by :meth:`sample`).
        transform: Augmentation from :func:`build_augmentation` (None: no augmentation).
        targets: Optional soft targets, one (H, W, C) uint8 array of class fractions per image
            of ``data`` (:func:`training.trainer.reduce_fractions`): patches then return
            their crop instead of the mask's (positions still come from the mask, so the
            same seed draws the same patches).
        scale_jitter: Random zoom j >= 0: each patch is cut at a side of P x r px, r drawn
            log-uniformly from [1 / (1 + j), 1 + j] (capped by the image), and resized to P
            (image: bilinear with antialiasing; mask or fractions: nearest), so grains appear
            up to (1 + j) x larger or smaller than in the data (scale augmentation, as in
            DeepLab's random rescaling, Chen et al. 2018). 0: none, and the same draws as
            before the option existed.

    Raises:
        ValueError: an image is smaller than ``patch``; ``targets`` does not match ``data``;
            ``scale_jitter`` < 0.
    """

    def __init__(self, data: list[tuple[np.ndarray, np.ndarray]], n_classes: int, patch: int,
                 rng: np.random.Generator, p_targeted: float = 0.5, max_coords: int = 20000,
                 transform=None, targets: list[np.ndarray] | None = None,
                 scale_jitter: float = 0.0):
        if scale_jitter < 0:
            raise ValueError(f"scale_jitter must be >= 0, got {scale_jitter}")
        self.data, self.patch, self.rng, self.p_targeted = data, patch, rng, p_targeted
        self.transform, self.scale_jitter = transform, scale_jitter
        if targets is not None and (len(targets) != len(data) or any(
                t.shape[:2] != m.shape for t, (_, m) in zip(targets, data, strict=True))):
            raise ValueError("targets must hold one (H, W, C) array per training image, of "
                             "its mask's (H, W)")
        self.targets = targets
        self.coords: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(n_classes)]
        for i, (_, mask) in enumerate(data):
            if min(mask.shape) < patch:
                raise ValueError(f"patch size {patch} exceeds training image {i} ({mask.shape})")
            flat = mask.ravel()
            for c in range(n_classes):
                where = np.flatnonzero(flat == c)
                if where.size > max_coords:
                    where = rng.choice(where, max_coords, replace=False)
                if where.size:
                    self.coords[c].append((i, where))
        self.present = [c for c in range(n_classes) if self.coords[c]]
        if not self.present:
            raise ValueError(f"no labelled pixel (all {IGNORE} = ignore) in the training masks")

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One augmented patch: ((P, P, 3) uint8, (P, P) uint8 class indices), or with
        ``targets`` ((P, P, 3) uint8, (P, P, C) uint8 class fractions)."""
        p, rng = self.patch, self.rng
        if rng.random() < self.p_targeted:
            c = self.present[rng.integers(len(self.present))]
            i, where = self.coords[c][rng.integers(len(self.coords[c]))]
            mask = self.data[i][1]
            y, x = divmod(int(where[rng.integers(where.size)]), mask.shape[1])
            side = self._side(mask.shape)
            y0 = int(np.clip(y - side // 2 + rng.integers(-side // 4, side // 4 + 1), 0,
                             mask.shape[0] - side))
            x0 = int(np.clip(x - side // 2 + rng.integers(-side // 4, side // 4 + 1), 0,
                             mask.shape[1] - side))
        else:
            i = int(rng.integers(len(self.data)))
            mask = self.data[i][1]
            side = self._side(mask.shape)
            y0 = int(rng.integers(mask.shape[0] - side + 1))
            x0 = int(rng.integers(mask.shape[1] - side + 1))
        img = self.data[i][0][y0:y0 + side, x0:x0 + side]
        target = (mask if self.targets is None else self.targets[i])[y0:y0 + side, x0:x0 + side]
        if side != p:
            img, target = _resize(img, p, nearest=False), _resize(target, p, nearest=True)
        return apply_augmentation(self.transform, img, target)

    def _side(self, shape: tuple[int, ...]) -> int:
        """The crop's side (px): P, or with ``scale_jitter`` P x r (one draw of r)."""
        if not self.scale_jitter:
            return self.patch
        j = math.log1p(self.scale_jitter)
        side = round(self.patch * math.exp(self.rng.uniform(-j, j)))
        return max(1, min(side, shape[0], shape[1]))

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` patches: ((n, P, P, 3) uint8, (n, P, P) uint8), or with ``targets``
        ((n, P, P, 3) uint8, (n, P, P, C) uint8)."""
        imgs, masks = zip(*(self.sample() for _ in range(n)), strict=True)
        return np.stack(imgs), np.stack(masks)


def _resize(a: np.ndarray, p: int, nearest: bool) -> np.ndarray:
    """(S, S) or (S, S, C) uint8 -> (p, p) or (p, p, C) uint8: nearest-exact, or bilinear
    with antialiasing (``torch.nn.functional.interpolate``)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(a))
    t = (t[None, None] if a.ndim == 2 else t.permute(2, 0, 1)[None]).float()
    if nearest:
        out = F.interpolate(t, size=(p, p), mode="nearest-exact")
    else:
        out = F.interpolate(t, size=(p, p), mode="bilinear", antialias=True, align_corners=False)
    out = out.round().clamp(0, 255).to(torch.uint8)[0]
    return out[0].numpy() if a.ndim == 2 else np.ascontiguousarray(out.permute(1, 2, 0).numpy())
