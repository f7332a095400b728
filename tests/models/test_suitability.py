"""models.suitability: the pixel sizes a package was trained at (``um_per_px``, widened by its
recorded random zoom) and the warning for a job outside them by more than the tolerance; the
demo model's warning for images not of its kind."""

from __future__ import annotations

import pytest

from imaging.mosaic import SAMPLES, demo_folders
from models import MODEL_ZOO, ModelDomain, read_package
from models.suitability import (
    PIXEL_SIZE_TOLERANCE,
    demo_model_warning,
    is_demo_image,
    pixel_size_warning,
    trained_pixel_sizes,
)

BUNDLED = read_package(MODEL_ZOO / "ebc-unet-mnv2" / "1", verify=False)


def _pkg(um_per_px, **training):
    return BUNDLED.model_copy(update={"um_per_px": um_per_px, "training": training,
                                      "name": "lumen", "version": "3"})


def test_trained_pixel_sizes_widen_by_the_recorded_random_zoom():
    assert trained_pixel_sizes(_pkg(None)) is None  # nothing recorded: nothing to compare
    assert trained_pixel_sizes(_pkg(0.5)) == (0.5, 0.5)
    assert trained_pixel_sizes(_pkg(0.5, scale_jitter=3.0)) == pytest.approx((0.125, 2.0))
    for odd in (None, "x", -1):  # unreadable or negative: no zoom
        assert trained_pixel_sizes(_pkg(0.5, scale_jitter=odd)) == (0.5, 0.5)


@pytest.mark.parametrize("pixel_size_um", [0.5, 0.5 * PIXEL_SIZE_TOLERANCE,
                                           0.5 / PIXEL_SIZE_TOLERANCE, 0.6, 0.4])
def test_within_the_tolerance_no_warning(pixel_size_um):
    assert pixel_size_warning(_pkg(0.5), pixel_size_um) is None


def test_unknown_pixel_sizes_give_no_warning():
    assert pixel_size_warning(_pkg(None), 2.0) is None
    assert pixel_size_warning(_pkg(0.5), None) is None
    assert pixel_size_warning(BUNDLED, 10.0) is None  # the bundled package records none


def test_a_coarser_and_a_finer_image_are_named_with_the_factor_and_what_to_do():
    coarse = pixel_size_warning(_pkg(0.5), 1.0)
    assert coarse is not None and coarse.startswith(
        "pixel size 1.000 µm/px is 2.0 x coarser than model lumen 3 was trained at "
        "(0.500 µm/px): grains and pores are 2.0 x smaller in px")
    assert "--pixel-size-um" in coarse and "um_per_px" in coarse
    fine = pixel_size_warning(_pkg(0.5), 0.125)
    assert fine is not None and "4.0 x finer" in fine and "4.0 x larger in px" in fine
    # with a random zoom the factor is counted from the nearest trained pixel size
    zoomed = _pkg(0.5, scale_jitter=1.0)  # 0.25-1.0 µm/px
    assert pixel_size_warning(zoomed, 1.4) is None and pixel_size_warning(zoomed, 0.2) is None
    far = pixel_size_warning(zoomed, 3.0)
    assert far is not None and "3.0 x coarser" in far and "zoomed to 0.250-1.000 µm/px" in far


def test_demo_images_are_recognised(tmp_path):
    demo = tmp_path / "home" / "demo"
    folders = [demo, SAMPLES]
    assert is_demo_image(str(demo / "mosaic-12mpx.tif"), folders)
    assert is_demo_image(f"file://{demo}/mosaic-12mpx.tif", folders)
    assert is_demo_image(str(next(SAMPLES.glob("*.png"))), folders)
    assert is_demo_image("/data/shared/nasa-ebc/images/a.png", folders)
    assert not is_demo_image(str(tmp_path / "pellet-0042.tif"), folders)
    assert not is_demo_image("s3://lab/pellet.tif", folders)


def test_demo_model_on_a_pellet_image_warns_and_points_to_train(tmp_path):
    pkg, folders = BUNDLED, demo_folders(tmp_path)
    warning = demo_model_warning(pkg, f"file://{tmp_path}/pellet.tif", folders)
    assert warning and warning.startswith("ebc-unet-mnv2 is the bundled demo model, trained on")
    assert "pelletseg train" in warning and "(model in the API)" in warning
    assert demo_model_warning(pkg, f"file://{tmp_path}/demo/mosaic-12mpx.tif", folders) is None
    assert demo_model_warning(pkg, "s3://x/anything.tif", folders, labels={"demo": True}) is None
    pellet = pkg.model_copy(update={"domain": ModelDomain(kind="pellet", images="pellets")})
    assert demo_model_warning(pellet, f"file://{tmp_path}/pellet.tif", folders) is None
