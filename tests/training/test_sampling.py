"""Training patches and loss: augmentation moves image and mask together, the sampler
over-samples rare classes, and ignored pixels (255) stay out of the loss."""

from __future__ import annotations

import numpy as np
import pytest

from training.importers import IGNORE
from training.losses import segmentation_loss
from training.sampling import PatchSampler, apply_augmentation, build_augmentation


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
