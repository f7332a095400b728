"""``pelletseg run`` says which model runs and what it was trained on, and warns when the
bundled demo model gets an image that is not a demo image."""

from __future__ import annotations

from cli.modelinfo import describe, trained_on, with_bundled_domain
from cli.run import announce_model
from core.settings import Settings
from models import MODEL_ZOO, read_package

ZOO = MODEL_ZOO / "ebc-unet-mnv2" / "1"


def demo_package():
    return read_package(ZOO, verify=False)


def test_the_bundled_model_declares_it_is_a_demo_model():
    pkg = demo_package()
    assert pkg.domain is not None and pkg.domain.kind == "demo"
    assert pkg.domain.dataset == "nasa-ebc" and "not iron-ore pellets" in pkg.domain.images
    lines = describe(pkg)
    assert lines[0] == ("model ebc-unet-mnv2 1 (Unet/mobilenet_v2; 3 classes: background, "
                        "oxide, crack)")
    assert "environmental barrier coatings" in lines[1] and "demo model" in lines[1]


def test_describe_says_the_pixel_sizes_a_model_was_trained_at_where_recorded():
    pkg = demo_package()
    assert "µm/px" not in describe(pkg)[1]  # the bundled package records none
    at = pkg.model_copy(update={"um_per_px": 0.5})
    assert describe(at)[1].endswith(", at 0.5 µm/px")
    zoomed = at.model_copy(update={"training": {**pkg.training, "scale_jitter": 3.0}})
    assert describe(zoomed)[1].endswith(", at 0.5 µm/px zoomed to 0.125-2 µm/px")


def test_trained_on_falls_back_to_the_training_record():
    pkg = demo_package().model_copy(update={"domain": None, "weights_sha256": "1" * 64})
    assert trained_on(pkg) == "dataset nasa-ebc (kind of images not declared in model.json)"
    assert with_bundled_domain(pkg).domain is None  # other weights: not the bundled package
    assert trained_on(pkg.model_copy(update={"training": {}})) == "not declared in model.json"


def test_a_store_published_before_domains_gets_the_bundled_domain():
    old = demo_package().model_copy(update={"domain": None})
    assert with_bundled_domain(old).domain == demo_package().domain


def test_announce_model_prints_model_and_warning(tmp_path, capsys):
    settings = Settings(home=tmp_path)
    announce_model(settings, demo_package(), f"file://{tmp_path}/pellet.tif", {})
    out, err = capsys.readouterr()
    assert out.startswith("model ebc-unet-mnv2 1") and "trained on SEM" in out
    assert "warning: ebc-unet-mnv2 is the bundled demo model" in err
    announce_model(settings, demo_package(), f"file://{tmp_path}/demo/mosaic-12mpx.tif", {})
    out, err = capsys.readouterr()
    assert "model ebc-unet-mnv2" in out and err == ""
    # several images: the model once, the warning once, for any image that is not a demo one
    demo = f"file://{tmp_path}/demo/mosaic-12mpx.tif"
    announce_model(settings, demo_package(), [demo, f"file://{tmp_path}/a.tif",
                                              f"file://{tmp_path}/b.tif"], {})
    out, err = capsys.readouterr()
    assert out.count("model ebc-unet-mnv2 1") == 1 and err.count("warning:") == 1
    announce_model(settings, demo_package(), [demo, demo], {})
    assert capsys.readouterr().err == ""
