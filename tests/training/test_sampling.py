"""Training patches and loss: augmentation moves image and mask (or class fractions) together,
the sampler over-samples rare classes and zooms patches with the image and mask together,
ignored pixels (255) stay out of the loss, and the
loss on class fractions is the label loss for one-hot ones."""

from __future__ import annotations

import numpy as np
import pytest

from training.importers import IGNORE
from training.losses import segmentation_loss
from training.sampling import (
    PatchSampler,
    apply_augmentation,
    build_augmentation,
    pad_as_served,
)


def test_augmentation_moves_image_and_mask_together():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (32, 32)).astype(np.uint8)
    img = np.stack([mask * 80, mask, 255 - mask], axis=-1).astype(np.uint8)
    d4 = [np.rot90(m, k) for m in (mask, mask[:, ::-1]) for k in range(4)]
    geometric, seen = build_augmentation("geometric"), set()
    for _ in range(30):
        a_img, a_mask = apply_augmentation(geometric, img, mask)
        assert (a_img[..., 0] == a_mask * 80).all() and (a_img[..., 1] == a_mask).all()
        seen.add(next(i for i, m in enumerate(d4) if np.array_equal(m, a_mask)))
    assert len(seen) >= 6  # the flips and rotations are drawn at random
    default, jittered = build_augmentation("default"), 0
    for _ in range(30):
        a_img, a_mask = apply_augmentation(default, img, mask)
        assert any(np.array_equal(m, a_mask) for m in d4)  # the mask is only moved
        k = next(i for i, m in enumerate(d4) if np.array_equal(m, a_mask))
        moved = [np.rot90(x, k % 4) for x in (img, img[:, ::-1])][k // 4]
        jittered += not np.array_equal(a_img, moved)
    assert jittered >= 5
    photometric, changed, gains = build_augmentation("photometric"), 0, set()
    grey = np.full((32, 32, 3), 120, np.uint8)
    for _ in range(40):
        a_img, a_mask = apply_augmentation(photometric, grey, mask)
        assert any(np.array_equal(m, a_mask) for m in d4)  # the mask is only moved
        means = a_img.reshape(-1, 3).mean(0)
        changed += not np.allclose(means, 120)
        gains.add(bool(np.ptp(means) > 2))  # channels scaled apart: a white-balance shift
    assert changed >= 20 and True in gains
    luminance, changed = build_augmentation("luminance"), 0
    tinted = np.zeros((32, 32, 3), np.uint8)
    tinted[...] = (150, 120, 90)
    for _ in range(40):
        a_img, a_mask = apply_augmentation(luminance, tinted, mask)
        assert any(np.array_equal(m, a_mask) for m in d4)
        r, g, b = a_img.reshape(-1, 3).astype(float).mean(0)
        changed += not np.isclose(r, 150)
        if 20 < b < 235:  # not clipped: red above green above blue, as before
            assert r > g > b
    assert changed >= 20
    assert build_augmentation("none") is None
    with pytest.raises(ValueError, match="augmentation"):
        build_augmentation("heavy")


def test_patch_sampler_over_samples_a_rare_class():
    rng = np.random.default_rng(0)
    mask = np.zeros((256, 256), np.uint8)
    mask[100:104, 200:204] = 1  # 16 px: 0.02 %
    mask[:, :8] = IGNORE
    data = [(np.zeros((256, 256, 3), np.uint8), mask)]

    def share(p_targeted):
        s = PatchSampler(data, 2, 32, np.random.default_rng(1), p_targeted=p_targeted)
        return np.mean([(s.sample()[1] == 1).any() for _ in range(300)])

    assert share(0.5) > 0.2 > share(0.0) * 4
    with pytest.raises(ValueError, match="no labelled pixel"):
        PatchSampler([(data[0][0], np.full((256, 256), IGNORE, np.uint8))], 2, 32, rng)


def test_scale_jitter_zooms_image_and_mask_together():
    pytest.importorskip("torch")
    x = np.arange(256)
    mask = np.broadcast_to(((x // 16) % 2).astype(np.uint8), (256, 256)).copy()  # 16 px stripes
    mask[:8] = IGNORE
    img = np.repeat((mask % 2 * 200 + 20).astype(np.uint8)[..., None], 3, axis=-1)
    data = [(img, mask)]

    def stripes(jitter, n=200):
        s = PatchSampler(data, 2, 64, np.random.default_rng(3), p_targeted=0.5, scale_jitter=jitter)
        counts = []
        for _ in range(n):
            a_img, a_mask = s.sample()
            assert a_img.shape == (64, 64, 3) and a_mask.shape == (64, 64)
            assert set(np.unique(a_mask)) <= {0, 1, IGNORE}
            row = a_mask[-1]  # the last row is never in the ignored band
            # the image follows the mask (bilinear edges aside): bright where the mask is 1
            assert np.mean((a_img[-1, :, 0] > 120) == (row == 1)) > 0.85
            counts.append(int((np.diff(row.astype(int)) != 0).sum()))
        return counts

    fixed, zoomed = stripes(0.0), stripes(0.5)
    assert set(fixed) <= {3, 4}  # 64 px across 16 px stripes
    assert min(zoomed) <= 2 and max(zoomed) >= 5  # stripes drawn up to 1.5 x wider and narrower
    same = PatchSampler(data, 2, 64, np.random.default_rng(3), p_targeted=0.5)
    again = PatchSampler(data, 2, 64, np.random.default_rng(3), p_targeted=0.5, scale_jitter=0)
    for _ in range(20):  # no jitter: the draws of a sampler without the option
        assert all(np.array_equal(a, b) for a, b in zip(same.sample(), again.sample(), strict=True))
    with pytest.raises(ValueError, match="scale_jitter"):
        PatchSampler(data, 2, 64, np.random.default_rng(0), scale_jitter=-0.1)


def test_loss_skips_ignored_pixels():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (1, 4, 4), generator=g)
    target[0, :2] = IGNORE
    keep = target[0] != IGNORE
    sub_logits, sub_target = logits[0][:, keep][None, :, :, None], target[0][keep][None, :, None]
    for dice in (0.0, 0.7):
        full = segmentation_loss(logits, target, 3, dice)
        assert torch.isfinite(full)
        assert full.item() == pytest.approx(segmentation_loss(sub_logits, sub_target, 3, dice).item(),
                                            rel=1e-5)
    assert segmentation_loss(logits, target, 3).item() == pytest.approx(
        F.cross_entropy(sub_logits, sub_target).item(), rel=1e-5)


def test_fraction_targets_move_with_the_image_and_one_hot_fractions_give_the_label_loss():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (32, 32)).astype(np.uint8)
    fractions = np.stack([(mask == c) * 255 for c in range(3)], -1).astype(np.uint8)
    img = np.stack([mask * 80, mask, 255 - mask], -1).astype(np.uint8)
    d4 = [np.rot90(m, k) for m in (mask, mask[:, ::-1]) for k in range(4)]
    geometric, seen = build_augmentation("geometric"), set()
    for _ in range(20):  # the C planes move together, as the mask would
        a_img, a_frac = apply_augmentation(geometric, img, fractions)
        assert a_frac.shape == (32, 32, 3) and (a_frac.sum(-1) == 255).all()
        assert (a_img[..., 1] == a_frac.argmax(-1)).all()
        seen.add(next(i for i, m in enumerate(d4) if np.array_equal(m, a_frac.argmax(-1))))
    assert len(seen) >= 5
    # the sampler returns the fraction crop at the mask's position: the same patches by seed
    plain = PatchSampler([(img, mask)], 3, 16, np.random.default_rng(3))
    soft = PatchSampler([(img, mask)], 3, 16, np.random.default_rng(3), targets=[fractions])
    for _ in range(5):
        (i1, m1), (i2, f2) = plain.sample(), soft.sample()
        assert np.array_equal(i1, i2) and np.array_equal(f2.argmax(-1), m1)
    with pytest.raises(ValueError, match=r"one \(H, W, C\) array per training image"):
        PatchSampler([(img, mask)], 3, 16, rng, targets=[fractions[:8]])

    # one-hot fractions (ignored pixels in no class) give the hard-label loss, weighted or not
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    target[0, :3] = IGNORE
    valid = (target != IGNORE).unsqueeze(1)
    q = F.one_hot(target.where(valid[:, 0], 0), 3).permute(0, 3, 1, 2).float() * valid
    w = torch.tensor([0.5, 1.0, 3.0])
    for dice, weight in ((0.0, None), (0.5, None), (0.5, w)):
        assert segmentation_loss(logits, q, 3, dice, weight).item() == pytest.approx(
            segmentation_loss(logits, target, 3, dice, weight).item(), rel=1e-5)
    # a mixed pixel's loss is lowest where the softmax equals its fractions
    mixed = torch.tensor([0.25, 0.75, 0.0]).view(1, 3, 1, 1)
    at = segmentation_loss(torch.log(mixed.clamp_min(1e-6)), mixed, 3).item()
    assert at < segmentation_loss(torch.tensor([0.0, 5.0, -5.0]).view(1, 3, 1, 1), mixed, 3).item()
    assert at < segmentation_loss(torch.tensor([5.0, 0.0, -5.0]).view(1, 3, 1, 1), mixed, 3).item()


def test_pad_as_served_mirrors_the_image_like_the_tiles_and_leaves_the_border_unlabelled():
    from core.geometry import TileGeometry
    from worker.engine.tiling import TileGrid, strip_bands

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (20, 30), dtype=np.uint8)
    padded, pmask = pad_as_served(img, mask, 4)
    assert padded.shape == (28, 38, 3) and pmask.shape == (28, 38)
    assert np.array_equal(padded[4:24, 4:34], img) and np.array_equal(pmask[4:24, 4:34], mask)
    assert (pmask[:4] == IGNORE).all() and (pmask[:, -4:] == IGNORE).all()
    # the top-left border is what tiled inference puts around the image with a 4 px halo
    grid = TileGrid(30, 20, TileGeometry(64, 4))
    (band,) = strip_bands(img, grid, 0, 20)
    assert grid.col_spans[0].start == grid.strip_spans(0, 20)[0].start == -4
    assert np.array_equal(padded, band[:28, :38])
    # no border: the same arrays
    same = pad_as_served(img, mask, 0)
    assert same[0] is img and same[1] is mask
    # a patch sampler over the padded image never centres on the unlabelled border
    s = PatchSampler([(padded, pmask)], 3, 16, np.random.default_rng(1), p_targeted=1.0,
                     transform=None)
    assert all((m != IGNORE).any() for m in (s.sample()[1] for _ in range(20)))
    with pytest.raises(ValueError, match="border"):
        pad_as_served(img, mask, -1)
    with pytest.raises(ValueError, match="differ"):
        pad_as_served(img, mask[:10], 2)
