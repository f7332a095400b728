"""Dataset import: value maps (sparse codes), colour-coded maps (RGB table, never BGR), ilastik
Simple Segmentation exports (PNG and HDF5), unknown labels reported with their pixel counts,
image ids below sub-folders and split patterns."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from training.datasets import IGNORE, DatasetError, load_dataset_spec, load_masks, load_split
from training.importers import ColourDecoder, ValueDecoder

# The pellet scheme of ../shared/data/README.md, RGB order.
PELLET = [("pore", (170, 0, 0)), ("epoxy", (255, 0, 0)), ("hematite", (255, 255, 0)),
          ("magnetite", (0, 0, 255)), ("wustite", (255, 85, 255)), ("iron", (0, 255, 255)),
          ("slag", (255, 170, 0)), ("olivine", (0, 85, 0))]


def _image(root, stem, shape=(16, 24), sub="images"):
    (root / sub).mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    Image.fromarray(img).save(root / sub / f"{stem}.png")
    return img


def _yaml(root, **spec):
    spec = {"name": "t", "images": "images/*.png", "masks": "masks/{stem}.png", **spec}
    path = root / "dataset.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_dataset_spec(path)


def _pellet_mask(shape=(16, 24)):
    """Class-index map with every pellet class in a vertical band of 3 px."""
    idx = np.repeat(np.arange(shape[1])[None] // 3 % len(PELLET), shape[0], 0).astype(np.uint8)
    rgb = np.array([c for _, c in PELLET], np.uint8)[idx]
    return idx, rgb


def test_colour_coded_masks_decode_as_rgb(tmp_path):
    idx, rgb = _pellet_mask()
    _image(tmp_path, "a")
    (tmp_path / "masks").mkdir()
    Image.fromarray(rgb).save(tmp_path / "masks" / "a.png")
    spec = _yaml(tmp_path, classes=[{"name": n, "rgb": list(c)} for n, c in PELLET])
    assert spec.mask_format == "rgb"  # inferred: colours and no values
    [(_, got)] = load_split(spec, ["a"])
    np.testing.assert_array_equal(got, idx)
    assert [c.value for c in spec.classes] == list(range(8))  # label_value = class index
    # A palette PNG holding the same colours decodes the same.
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(
        tmp_path / "masks" / "a.png")
    np.testing.assert_array_equal(load_split(spec, ["a"])[0][1], idx)


def test_unknown_colour_names_file_colour_count_and_bgr(tmp_path):
    _, rgb = _pellet_mask()
    rgb[:2, :5] = (12, 34, 56)          # 10 px of a colour in no table
    rgb[5, :3] = PELLET[6][1][::-1]     # 3 px of slag written in BGR order: (0, 170, 255)
    for stem in ("a", "b"):
        _image(tmp_path, stem)
        (tmp_path / "masks").mkdir(exist_ok=True)
    Image.fromarray(rgb).save(tmp_path / "masks" / "b.png")
    Image.fromarray(_pellet_mask()[1]).save(tmp_path / "masks" / "a.png")
    spec = _yaml(tmp_path, mask_format="rgb",
                 classes=[{"name": n, "rgb": list(c)} for n, c in PELLET])
    with pytest.raises(DatasetError) as e:
        load_split(spec, ["a", "b"])
    msg = str(e.value)
    assert "b.png" in msg and "a.png" not in msg and "1 of 2 masks" in msg
    assert "(12, 34, 56): 10" in msg and "(0, 170, 255): 3" in msg
    assert "'slag' (255, 170, 0) in BGR order" in msg


def test_colour_decoder_ignore_and_listing_of_many_colours():
    dec = ColourDecoder(((0, 0, 0), (255, 0, 0)), ("a", "b"), ignore=((9, 9, 9),))
    rgb = np.array([[[0, 0, 0], [255, 0, 0], [9, 9, 9]]], np.uint8)
    assert dec.decode_array(rgb).tolist() == [[0, 1, IGNORE]]
    many = np.arange(30, dtype=np.uint8).repeat(3).reshape(1, 30, 3)
    with pytest.raises(DatasetError, match=r"m\.png: .*\(1, 1, 1\): 1.*and 20 more \(20 px\)"):
        dec.decode_array(many[:, 1:], "m.png")  # 28 unknown greys (9 is ignored): 8 listed, 20 summed


def test_value_maps_sparse_codes_16_bit_and_ignore(tmp_path):
    _image(tmp_path, "a")
    mask = np.zeros((16, 24), np.uint16)
    mask[:, 8:] = 7
    mask[:, 16:] = 3
    mask[0, 0] = 99        # ignored value
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")  # 16-bit grey PNG
    spec = _yaml(tmp_path, classes=[{"name": "bg", "value": 0}, {"name": "x", "value": 3},
                                    {"name": "y", "value": 7}], ignore=[99])
    got = load_split(spec, ["a"])[0][1]
    assert got.dtype == np.uint8 and got[0, 0] == IGNORE and got[1, 0] == 0
    assert got[1, 8] == 2 and got[1, 16] == 1
    mask[3, :4] = 300      # a 16-bit value beyond any class
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png: values not in the class table.*300: 4"):
        load_split(spec, ["a"])


def test_value_decoder_palette_png_uses_indices(tmp_path):
    mask = Image.fromarray(np.array([[0, 1], [5, 5]], np.uint8), mode="P")
    mask.putpalette([0, 0, 0, 255, 0, 0] + [0, 255, 0] * 254)
    mask.save(tmp_path / "m.png")
    assert ValueDecoder((0, 1, 5)).decode(tmp_path / "m.png").tolist() == [[0, 1], [2, 2]]


def test_ilastik_png_export_is_one_based(tmp_path):
    _image(tmp_path, "a")
    labels = np.ones((16, 24), np.uint8)
    labels[:, 12:] = 2
    (tmp_path / "masks").mkdir()
    Image.fromarray(labels).save(tmp_path / "masks" / "a_Simple Segmentation.png")
    spec = _yaml(tmp_path, masks="masks/{stem}_Simple Segmentation.png", mask_format="ilastik",
                 classes=[{"name": "pore"}, {"name": "epoxy"}])
    assert [c.value for c in spec.classes] == [1, 2]
    got = load_split(spec, ["a"])[0][1]
    assert got[0, 0] == 0 and got[0, 20] == 1
    labels[0, :7] = 0  # 0 is not an ilastik label: reported, not mapped
    Image.fromarray(labels).save(tmp_path / "masks" / "a_Simple Segmentation.png")
    with pytest.raises(DatasetError, match=r"Simple Segmentation\.png: values .*\{0: 7\}"):
        load_split(spec, ["a"])


def test_ilastik_hdf5_export(tmp_path):
    h5py = pytest.importorskip("h5py")
    _image(tmp_path, "a")
    labels = np.full((16, 24, 1), 3, np.uint8)   # ilastik's default axis order yxc
    labels[:8] = 1
    (tmp_path / "masks").mkdir()
    with h5py.File(tmp_path / "masks" / "a.h5", "w") as f:
        f["exported_data"] = labels
    spec = _yaml(tmp_path, masks="masks/{stem}.h5", mask_format="ilastik",
                 classes=[{"name": "a"}, {"name": "b"}, {"name": "c"}])
    got = load_split(spec, ["a"])[0][1]
    assert got.shape == (16, 24) and got[0, 0] == 0 and got[15, 0] == 2
    bad = _yaml(tmp_path, masks="masks/{stem}.h5", mask_format="ilastik", h5_dataset="data",
                classes=[{"name": "a"}])
    with pytest.raises(DatasetError, match=r"a\.h5: no HDF5 dataset 'data' \(found: \['exported_data'\]\)"):
        load_split(bad, ["a"])


def test_wrong_band_count_for_the_format_is_explained(tmp_path):
    _image(tmp_path, "a")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(tmp_path / "masks" / "a.png")
    spec = _yaml(tmp_path, mask_format="rgb", classes=[{"name": "a", "rgb": [0, 0, 0]}])
    with pytest.raises(DatasetError, match=r"single-band .* mask_format is rgb"):
        load_split(spec, ["a"])
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "masks" / "a.png")
    spec = _yaml(tmp_path, classes=[{"name": "a", "value": 0}])
    with pytest.raises(DatasetError, match="mask_format: rgb"):
        load_split(spec, ["a"])


@pytest.mark.parametrize("spec, message", [
    ({"mask_format": "rgb", "classes": [{"name": "a", "value": 0}]}, "needs its mask colour"),
    ({"mask_format": "rgb", "classes": [{"name": "a", "rgb": [1, 2, 3]},
                                        {"name": "b", "rgb": [1, 2, 3]}]}, "colours must be unique"),
    ({"classes": [{"name": "a", "value": 0}, {"name": "b"}]}, "needs its mask 'value'"),
    ({"classes": [{"name": "a", "value": 0}], "ignore": [0]}, "both a class and ignored"),
    ({"classes": [{"name": "a", "rgb": [0, 0, 300]}]}, "0..255"),
    ({"classes": [{"name": "a", "value": 0}], "masks": "m/x.png"}, "'{stem}' or '{id}'"),
])
def test_invalid_class_tables(tmp_path, spec, message):
    with pytest.raises(DatasetError, match=r"dataset\.yaml") as e:
        _yaml(tmp_path, **spec)
    assert message in str(e.value)


def test_ids_below_subfolders_and_split_patterns(tmp_path):
    for split in ("train", "val"):
        for stem in ("01", "02"):
            _image(tmp_path, stem, sub=f"images/{split}")
            (tmp_path / "masks" / split).mkdir(parents=True, exist_ok=True)
            value = 1 if split == "val" else 0
            Image.fromarray(np.full((16, 24), value, np.uint8)).save(
                tmp_path / "masks" / split / f"{stem}.png")
    spec = _yaml(tmp_path, images="images/*/*.png", masks="masks/{id}.png",
                 classes=[{"name": "a", "value": 0}, {"name": "b", "value": 1}],
                 splits={"train": ["train/*"], "val": ["val/02", "val/01.png"]})
    assert spec.split_stems() == {"train": ["train/01", "train/02"], "val": ["val/02", "val/01"]}
    assert load_split(spec, ["val/01"])[0][1].max() == 1
    assert load_split(spec, ["train/01"])[0][1].max() == 0
    spec = _yaml(tmp_path, images="images/*/*.png", masks="masks/{id}.png",
                 classes=[{"name": "a", "value": 0}], splits={"test": ["test/*"]})
    with pytest.raises(DatasetError, match="test/\\*"):
        spec.split_stems()


def _two_level_data(root):
    """images/x/a.png, images/x/deep/b.png and their masks (value 0) under masks/."""
    for stem, sub in (("a", "images/x"), ("b", "images/x/deep")):
        _image(root, stem, sub=sub)
        mdir = root / sub.replace("images", "masks", 1)
        mdir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((16, 24), np.uint8)).save(mdir / f"{stem}.png")


def test_absolute_home_and_recursive_globs(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _two_level_data(data)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    cls = [{"name": "a", "value": 0}]
    spec = _yaml(cfg, images=f"{data}/images/**/*.png", masks=f"{data}/masks/{{id}}.png",
                 classes=cls)
    assert spec.split_stems() == {"train": ["x/a", "x/deep/b"]}
    assert [m.shape for _, m in load_split(spec, ["x/a", "x/deep/b"])] == [(16, 24)] * 2
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = _yaml(cfg, images="~/data/images/x/*.png", masks="~/data/masks/x/{stem}.png",
                 classes=cls)
    assert list(spec.image_paths()) == ["a"] and load_split(spec, ["a"])[0][1].max() == 0
    spec = _yaml(cfg, images="../data/images/**/*.png", masks="../data/masks/{id}.png",
                 classes=cls)
    assert list(spec.image_paths()) == ["x/a", "x/deep/b"]


def test_errors_name_the_key_and_the_value(tmp_path):
    cls = [{"name": "a", "value": 0}]
    with pytest.raises(DatasetError, match=r"images = /nowhere/\*\.png: no file matches"):
        _yaml(tmp_path, images="/nowhere/*.png", classes=cls).image_paths()
    with pytest.raises(DatasetError, match=r"classes\.0\.value = 300: .*less than or equal"):
        _yaml(tmp_path, classes=[{"name": "a", "value": 300}])
    with pytest.raises(DatasetError, match=r"um_per_px = -1: .*greater than 0"):
        _yaml(tmp_path, classes=cls, um_per_px=-1)
    with pytest.raises(DatasetError, match=r"colour = 'red': Extra inputs"):
        _yaml(tmp_path, classes=cls, colour="red")
    _image(tmp_path, "a")
    spec = _yaml(tmp_path, classes=cls, masks="nomasks/{stem}.png")
    with pytest.raises(DatasetError, match=r"masks = nomasks/\{stem\}\.png: .*does not exist"):
        load_split(spec, ["a"])
    spec = _yaml(tmp_path, classes=cls, splits={"val": ["zz"]})
    with pytest.raises(DatasetError, match=r"splits\.val = \['zz'\]"):
        spec.split_stems()


def test_one_error_lists_missing_mismatched_and_unknown_masks(tmp_path):
    idx, rgb = _pellet_mask()
    for stem in ("a", "b", "c", "d"):
        _image(tmp_path, stem)
    (tmp_path / "masks").mkdir()
    Image.fromarray(rgb).save(tmp_path / "masks" / "a.png")           # good
    Image.fromarray(rgb[:, :12]).save(tmp_path / "masks" / "b.png")   # 12 px wide, image 24
    bad = rgb.copy()
    bad[0, 0] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "masks" / "c.png")           # unknown colour
    spec = _yaml(tmp_path, classes=[{"name": n, "rgb": list(c)} for n, c in PELLET])
    with pytest.raises(DatasetError) as e:                             # d.png: missing
        load_split(spec, ["a", "b", "c", "d"])
    msg = str(e.value)
    assert "3 of 4 masks" in msg and "a.png" not in msg
    assert "b.png: mask is 12x16 px but image" in msg and "(1, 2, 3): 1" in msg
    assert "d.png, the mask of image" in msg and "does not exist" in msg
    # load_masks reads the masks alone (no size check: the images are not read) ...
    masks = load_masks(spec, ["a", "b"])
    np.testing.assert_array_equal(masks[0], idx)
    assert masks[1].shape == (16, 12)
    # ... and names every bad one the same way
    with pytest.raises(DatasetError, match="2 of 3 masks") as e:
        load_masks(spec, ["a", "c", "d"])
    assert "c.png" in str(e.value) and "d.png" in str(e.value)


def test_training_images_are_read_as_their_jobs_read_them(tmp_path):
    """A 16-bit grey training image: Pillow's RGB conversion clipped it (every sample above
    255 became white) while a job takes its high byte; now both read it alike, 12-bit camera
    images by the dataset's ``significant_bits`` (as a job's ``--significant-bits``), and one
    that nothing describes and the high byte leaves black is refused saying what to set."""
    import tifffile

    from imaging.formats import read_rgb8, write_model_ready
    from imaging.reading import open_image, read_rows

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    full = np.random.default_rng(3).integers(0, 65536, (16, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "images" / "a.tif", full)
    twelve = full >> 4  # the same scene from a 12-bit camera
    tifffile.imwrite(tmp_path / "images" / "b.tif", twelve)
    for stem in "ab":
        Image.fromarray(np.zeros((16, 24), np.uint8)).save(tmp_path / "masks" / f"{stem}.png")
    classes = [{"name": "mount", "value": 0, "role": "mount"}]
    spec = _yaml(tmp_path, images="images/*.tif", classes=classes)
    [(image, _)] = load_split(spec, ["a"])
    ready = write_model_ready(tmp_path / "images" / "a.tif", tmp_path / "ready.tif",
                              max_pixels=10**8)
    np.testing.assert_array_equal(image, read_rows(open_image(ready.path, max_pixels=10**8),
                                                   0, 16))  # what a job's rows read
    np.testing.assert_array_equal(image[..., 1], full >> 8)
    with pytest.raises(DatasetError, match=r"b.tif: cannot read image: .*fit in 12 bits.*"
                       r"significant_bits: 12 in its dataset.yaml"):
        load_split(spec, ["b"])
    spec12 = _yaml(tmp_path, images="images/*.tif", classes=classes, significant_bits=12)
    [(image12, _)] = load_split(spec12, ["b"])
    np.testing.assert_array_equal(image12, image)  # the 12-bit camera's scene, as bright
    np.testing.assert_array_equal(image12, read_rgb8(tmp_path / "images" / "b.tif",
                                                     max_pixels=10**8, significant_bits=12))
    assert spec12.describe({"train": ["b"]})["significant_bits"] == 12
    with pytest.raises(DatasetError, match="significant_bits"):
        _yaml(tmp_path, images="images/*.tif", classes=classes, significant_bits=17)
