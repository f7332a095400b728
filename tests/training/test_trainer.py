"""Tests of training.trainer: dataset.yaml parsing, metrics, tiny deterministic training runs,
checkpoints and --resume, and ``pelletseg train``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from core.geometry import TileGeometry
from models.package import WEIGHTS_FILE, read_package, sha256_file
from training.checkpoints import CheckpointError, read_state
from training.confusion import confusion_matrix, iou_per_class, miou
from training.datasets import DatasetError, load_dataset_spec, load_split, mask_to_index
from training.importers import IGNORE
from training.trainer import (
    channel_stats,
    class_weights_inv_sqrt,
    reduce_fractions,
    reduce_pair,
    train,
)
from worker.engine.network import build_model, load_weights


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine can be
    50x slower (OpenMP spin-waiting)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CLASSES = [{"name": "bg", "value": 0}, {"name": "oxide", "value": 5, "rgb": [0, 170, 255]},
           {"name": "crack", "value": 7}]
STEMS = ["a", "b", "c", "d"]


def _write_pair(root, stem, size=(64, 64), values=(0, 5, 7), seed=0):
    rng = np.random.default_rng(seed)
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 2] = values[1]
    mask[h // 2:, : w // 4] = values[2]
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[mask == values[1]] += 120  # learnable: oxide is bright
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    Image.fromarray(img).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return img, mask


def _dataset(root, splits="inline", **extra):
    """Write 4 image/mask pairs and a dataset.yaml; ``splits``: "inline", None or a value."""
    for i, stem in enumerate(STEMS):
        _write_pair(root, stem, seed=i)
    spec = {"name": "tiny", "images": "images/*.png", "masks": "masks/{stem}.png",
            "classes": CLASSES, **extra}
    if splits == "inline":
        spec["splits"] = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    elif splits is not None:
        spec["splits"] = splits
    path = root / "dataset.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_parse_and_load_maps_values_to_indices(tmp_path):
    spec = load_dataset_spec(_dataset(tmp_path))
    assert spec.name == "tiny" and spec.root == tmp_path.resolve()
    assert spec.split_stems() == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    data = load_split(spec, ["a", "c"])
    img, idx = data[0]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert idx.shape == (64, 64) and idx.dtype == np.uint8
    # value 5 -> index 1, value 7 -> index 2
    assert idx[0, 0] == 1 and idx[63, 0] == 2 and idx[63, 63] == 0
    assert np.bincount(idx.ravel(), minlength=3).tolist() == [64 * 32 - 16 * 32, 32 * 64, 16 * 32]


def test_no_splits_means_all_train(tmp_path):
    spec = load_dataset_spec(_dataset(tmp_path, splits=None))
    assert spec.split_stems() == {"train": STEMS}


def test_splits_from_json_file_names_to_stems(tmp_path):
    (tmp_path / "splits.json").write_text(json.dumps(
        {"X": {"train": ["a.png", "b.png"], "val": ["c.png"]}, "Y": {"train": ["d.png"]}}))
    spec = load_dataset_spec(_dataset(tmp_path, splits={"file": "splits.json", "key": "X"}))
    assert spec.split_stems() == {"train": ["a", "b"], "val": ["c"]}
    spec = load_dataset_spec(_dataset(tmp_path, splits={"file": "splits.json", "key": "Z"}))
    with pytest.raises(DatasetError, match=r"splits\.json"):
        spec.split_stems()


def test_unknown_mask_value_names_file_value_and_count(tmp_path):
    spec = load_dataset_spec(_dataset(tmp_path))
    mask = np.asarray(Image.open(tmp_path / "masks" / "b.png")).copy()
    mask[:3, :4] = 9  # 12 pixels of an undeclared class
    mask[10, 10] = 200
    Image.fromarray(mask).save(tmp_path / "masks" / "b.png")
    with pytest.raises(DatasetError) as e:
        load_split(spec, ["a", "b"])
    msg = str(e.value)
    assert "b.png" in msg and "9: 12" in msg and "200: 1" in msg and "a.png" not in msg


def test_mask_to_index_direct():
    lut = np.full(256, 255, np.uint8)
    lut[[0, 5]] = [0, 1]
    assert mask_to_index(np.array([[0, 5], [5, 5]], np.uint8), lut).tolist() == [[0, 1], [1, 1]]
    with pytest.raises(DatasetError, match=r"m\.png.*\{3: 2\}"):
        mask_to_index(np.array([[0, 3], [3, 5]], np.uint8), lut, "m.png")


@pytest.mark.parametrize("problem", ["size", "missing", "rgb"])
def test_bad_masks_raise(tmp_path, problem):
    spec = load_dataset_spec(_dataset(tmp_path))
    path = tmp_path / "masks" / "c.png"
    if problem == "size":
        Image.fromarray(np.zeros((32, 64), np.uint8)).save(path)
    elif problem == "missing":
        path.unlink()
    else:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    with pytest.raises(DatasetError, match=r"c\.png"):
        load_split(spec, ["c"])


@pytest.mark.parametrize("change", [
    {"masks": "masks/x.png"},                                     # no {stem}
    {"classes": [{"name": "a", "value": 0}, {"name": "b", "value": 0}]},  # duplicate value
    {"classes": [{"name": "a", "value": 300}]},                   # value > 255
    {"colour": "red"},                                            # unknown key
])
def test_invalid_yaml_raises(tmp_path, change):
    path = _dataset(tmp_path)
    spec = {**yaml.safe_load(path.read_text()), **change}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DatasetError, match=r"dataset\.yaml"):
        load_dataset_spec(path)


def test_split_naming_absent_image_raises(tmp_path):
    spec = load_dataset_spec(_dataset(tmp_path, splits={"train": ["a", "zz"]}))
    with pytest.raises(DatasetError, match="zz"):
        spec.split_stems()


def test_confusion_and_miou_hand_made():
    pred = np.array([[0, 1], [1, 2]])
    target = np.array([[0, 1], [2, 2]])
    conf = confusion_matrix(pred, target, 4)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = expected[1, 1] = expected[2, 1] = expected[2, 2] = 1
    assert conf.dtype == np.int64 and (conf == expected).all()
    iou = iou_per_class(conf)
    assert iou[:3] == pytest.approx([1.0, 0.5, 0.5]) and np.isnan(iou[3])  # class 3 absent
    assert miou(conf) == pytest.approx(2 / 3)
    # target 255 (ignore) is skipped; a wrong prediction lowers class IoU
    conf2 = confusion_matrix(np.array([0, 0, 1]), np.array([0, 255, 0]), 2)
    assert conf2.tolist() == [[1, 1], [0, 0]]
    assert miou(conf2) == pytest.approx(0.25)  # class 0: 1/2, class 1: 0/1
    assert np.isnan(miou(np.zeros((2, 2))))
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 2)


def test_channel_stats():
    a = np.zeros((2, 2, 3), np.uint8)
    b = np.full((2, 2, 3), 255, np.uint8)
    mean, std = channel_stats([a, b])
    assert mean == pytest.approx([0.5] * 3) and std == pytest.approx([0.5] * 3)


def test_class_weights_inv_sqrt():
    masks = [np.array([[0] * 8 + [1] * 2], np.uint8)]  # shares 0.8, 0.2, class 2 absent
    w = class_weights_inv_sqrt(masks, 3)
    assert w[2] == 0 and w[1] == pytest.approx(2 * w[0], rel=1e-3)
    assert 0.8 * w[0] + 0.2 * w[1] == pytest.approx(1.0, rel=1e-3)


def _tiny_train(yaml_path, out, seed=0, **kw):
    args = {"arch": "Unet", "encoder": "mobilenet_v2", "epochs": 2, "out_dir": out,
            "name": "tiny-unet", "version": "1", "patch_size": 64, "batch_size": 2, "lr": 1e-3,
            "seed": seed, "arch_params": {"decoder_channels": [16, 16, 16, 16, 16]},
            "steps_per_epoch": 2, "progress": False, "dice_weight": 0.5,
            "class_weights": "inv_sqrt", "geometry": TileGeometry(64, 16)}
    return train(yaml_path, **{**args, **kw})


def test_tiny_training_writes_valid_deterministic_package(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "ds").mkdir()
    path = _dataset(tmp_path / "ds")
    pkg = _tiny_train(path, tmp_path / "p1")
    read = read_package(tmp_path / "p1")  # verifies the sha256
    assert read == pkg
    assert pkg.weights_sha256 == sha256_file(tmp_path / "p1" / WEIGHTS_FILE)
    assert [(c.index, c.name, c.label_value) for c in pkg.classes] == [
        (0, "bg", 0), (1, "oxide", 5), (2, "crack", 7)]
    assert pkg.classes[1].rgb == (0, 170, 255)
    assert pkg.training["splits"] == {"train": 2, "val": 1, "test": 1}
    assert pkg.training["dataset"] == "tiny" and pkg.training["seed"] == 0
    assert len(pkg.training["class_weights"]) == 3 and pkg.training["class_weights"][2] > 1
    assert {"val_miou", "val_iou", "test_miou", "test_iou", "best_epoch"} <= set(pkg.metrics)
    assert "tiled inference (tile 64, halo 16, tta none)" in pkg.metrics["evaluated_with"]
    served = pkg.metrics["cpu_bf16_agreement"]  # measured where this CPU has bfloat16 units
    assert pkg.cpu_precision == served["cpu_precision"] and served["threshold_pct"] == 99.9
    if served["measured"]:
        assert [r["name"] for r in served["images"]] == ["c"]  # the val split's stems
    data = pkg.training["data"]
    assert data["split_images"] == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert data["train_class_pixels"] == {"bg": 2 * 1536, "oxide": 2 * 2048, "crack": 2 * 512}
    assert data["mask_format"] == "values" and pkg.training["augmentation"] == "default"
    assert set(pkg.metrics["val_iou"]) == {"bg", "oxide", "crack"}
    assert 0.0 <= pkg.metrics["val_miou"] <= 1.0
    spec = load_dataset_spec(path)
    mean, std = channel_stats([img for img, _ in load_split(spec, ["a", "b"])])
    assert list(pkg.normalisation.mean) == pytest.approx(mean)
    assert list(pkg.normalisation.std) == pytest.approx(std)

    model = build_model(read)
    load_weights(model, tmp_path / "p1")
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64)

    same = _tiny_train(path, tmp_path / "p2")
    assert same.weights_sha256 == pkg.weights_sha256
    other = _tiny_train(path, tmp_path / "p3", seed=1)
    assert other.weights_sha256 != pkg.weights_sha256


def test_reduce_pair_averages_the_image_and_keeps_labels():
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    mask = np.array([[0, 1, 2, 2, 1, 1]] * 2 + [[2, 2, 0, 0, 1, 1]] * 2, np.uint8)
    small, labels = reduce_pair(img, mask, 0.5)
    assert small.shape == (2, 3, 3) and labels.shape == (2, 3) and small.dtype == np.uint8
    want = img.reshape(2, 2, 3, 2, 3).astype(float).mean(axis=(1, 3))  # 2 x 2 block means
    assert np.abs(small.astype(float) - want).max() <= 0.5
    assert set(np.unique(labels)) <= set(np.unique(mask))  # nearest pixel: no label invented
    assert reduce_pair(img, mask, 1.0) == (img, mask)


def test_reduce_fractions_gives_each_model_pixel_its_class_shares():
    mask = np.array([[0, 1, 2, 2, 1, 1]] * 2 + [[2, 2, 0, 0, 1, 1]] * 2, np.uint8)
    mask[3, 5] = 255  # ignored: in no class
    frac = reduce_fractions(mask, 3, 0.5)
    assert frac.shape == (2, 3, 3) and frac.dtype == np.uint8
    want = np.stack([(mask == c).reshape(2, 2, 3, 2).mean(axis=(1, 3)) for c in range(3)], -1)
    assert np.abs(frac / 255 - want).max() <= 0.5 / 255
    assert frac[0, 0].tolist() == [128, 128, 0]  # half class 0, half class 1 (rounded)
    assert frac[1, 2].tolist() == [0, 191, 0]  # three of four labelled
    # labels, the nearest pixel, name one of the classes the fractions hold
    labels = reduce_pair(np.zeros((4, 6, 3), np.uint8), mask, 0.5)[1]
    assert all(frac[y, x, labels[y, x]] > 0 for y in range(2) for x in range(3)
               if labels[y, x] < 3)


def test_fraction_targets_train_and_are_recorded(tmp_path):
    path = _dataset(tmp_path / "ds")
    pkg = _tiny_train(path, tmp_path / "p", patch_size=32, input_scale=0.5, epochs=1,
                      targets="fractions", final_eval=False)
    assert pkg.training["targets"] == "fractions"
    labels = _tiny_train(path, tmp_path / "q", patch_size=32, input_scale=0.5, epochs=1,
                         final_eval=False)
    assert labels.training["targets"] == "labels"
    assert labels.weights_sha256 != pkg.weights_sha256  # another loss, other weights
    # at full resolution fractions are the labels: the same weights as a label run
    full = [_tiny_train(path, tmp_path / f"f{t}", epochs=1, targets=t, final_eval=False)
            for t in ("labels", "fractions")]
    assert full[0].weights_sha256 == full[1].weights_sha256
    assert full[1].training["targets"] == "labels"
    with pytest.raises(ValueError, match="targets must be one of"):
        _tiny_train(path, tmp_path / "r", epochs=1, targets="soft")


def test_border_halo_pads_the_reduced_training_images_as_served(tmp_path, monkeypatch):
    import training.trainer as trainer

    seen = []
    real = trainer.PatchSampler

    def recording(data, *args, **kwargs):
        seen.append([(img.shape, mask.copy()) for img, mask in data])
        return real(data, *args, **kwargs)

    monkeypatch.setattr(trainer, "PatchSampler", recording)
    path = _dataset(tmp_path / "ds")
    pkg = _tiny_train(path, tmp_path / "p", patch_size=32, input_scale=0.5, epochs=1,
                      border="halo", final_eval=False)
    # the 64 px images at 0.5 are 32 px, padded by the halo (16 image px = 8 model px)
    assert pkg.training["border"] == "halo" and pkg.training["border_px"] == 8
    assert [shape for shape, _ in seen[0]] == [(48, 48, 3)] * 2
    assert all((m[:8] == IGNORE).all() and (m[8:40, 8:40] != IGNORE).all() for _, m in seen[0])
    plain = _tiny_train(path, tmp_path / "q", patch_size=32, input_scale=0.5, epochs=1,
                        final_eval=False)
    assert plain.training["border"] == "none" and plain.training["border_px"] == 0
    assert [shape for shape, _ in seen[1]] == [(32, 32, 3)] * 2
    with pytest.raises(ValueError, match="border must be one of"):
        _tiny_train(path, tmp_path / "r", epochs=1, border="mirror")
    with pytest.raises(ValueError, match="needs targets 'labels'"):
        _tiny_train(path, tmp_path / "r", epochs=1, border="halo", targets="fractions")


def test_input_scale_trains_on_reduced_images_and_validates_at_full_resolution(tmp_path):
    path = _dataset(tmp_path / "ds")
    pkg = _tiny_train(path, tmp_path / "p", patch_size=32, input_scale=0.5, epochs=1)
    assert pkg.input_scale == read_package(tmp_path / "p").input_scale == 0.5
    # the model card describes the data at its own resolution
    assert pkg.training["data"]["train_class_pixels"] == {
        "bg": 2 * 1536, "oxide": 2 * 2048, "crack": 2 * 512}
    # normalisation from the images the model saw
    reduced = [reduce_pair(img, m, 0.5)[0] for img, m in
               load_split(load_dataset_spec(path), ["a", "b"])]
    assert list(pkg.normalisation.mean) == pytest.approx(channel_stats(reduced)[0])
    # the 64 px val image is labelled through the tiled path, 64 px tiles reduced to 32 px
    assert set(pkg.metrics["val_iou"]) == {"bg", "oxide", "crack"}
    with pytest.raises(ValueError, match="not a multiple of 32"):
        _tiny_train(path, tmp_path / "q", patch_size=32, input_scale=0.75, epochs=1)
    with pytest.raises(ValueError, match=r"input_scale must be in \(0, 1\]"):
        _tiny_train(path, tmp_path / "q", patch_size=32, input_scale=1.5, epochs=1)


def test_train_rejects_bad_patch_size(tmp_path):
    with pytest.raises(ValueError, match="multiple of 32"):
        train(_dataset(tmp_path), epochs=1, out_dir=tmp_path / "p", name="x", version="1",
              patch_size=50)
    with pytest.raises(ValueError, match="exceeds"):
        train(_dataset(tmp_path), encoder="mobilenet_v2", epochs=1, out_dir=tmp_path / "p",
              name="x", version="1", patch_size=96, progress=False)
    with pytest.raises(ValueError, match="class_weights"):
        train(_dataset(tmp_path), encoder="mobilenet_v2", epochs=1, out_dir=tmp_path / "p",
              name="x", version="1", patch_size=64, progress=False, class_weights=[1.0, 2.0])


def test_cli_train(tmp_path):
    from click.testing import CliRunner

    from cli.train import train as train_cmd

    path = _dataset(tmp_path)
    out = tmp_path / "pkg"
    args = [str(path), "--encoder", "mobilenet_v2", "--arch-params",
            '{"decoder_channels": [16, 16, 16, 16, 16]}', "--epochs", "1", "--out", str(out),
            "--name", "cli-tiny", "--version", "2", "--patch-size", "64", "--batch-size", "2",
            "--steps-per-epoch", "1", "--full-weights", "--home", str(tmp_path / "home")]
    res = CliRunner().invoke(train_cmd, args)
    assert res.exit_code == 0, res.output
    assert read_package(out).version == "2" and "val mIoU" in res.output
    assert read_package(out).um_per_px is None and "note: the dataset gives no um_per_px" in (
        res.output)
    scaled = [str(_dataset(tmp_path / "scaled", um_per_px=0.5)), *args[1:]]
    scaled[scaled.index(str(out))] = str(tmp_path / "pkg-scaled")
    res = CliRunner().invoke(train_cmd, [*scaled[:-2], "--home", str(tmp_path / "home2")])
    assert res.exit_code == 0, res.output
    assert read_package(tmp_path / "pkg-scaled").um_per_px == 0.5 and "note:" not in res.output
    bad = CliRunner().invoke(train_cmd, [*args, "--name", "Bad Name!", "--out",
                                         str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "name" in bad.output and "should match pattern" in bad.output


def test_one_epoch_runs_with_one_seed_give_identical_weights(tmp_path):
    from safetensors.numpy import load_file

    path = _dataset(tmp_path / "ds")
    a = _tiny_train(path, tmp_path / "a", epochs=1, final_eval=False)
    b = _tiny_train(path, tmp_path / "b", epochs=1, final_eval=False)
    wa, wb = load_file(tmp_path / "a" / WEIGHTS_FILE), load_file(tmp_path / "b" / WEIGHTS_FILE)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert a.weights_sha256 == b.weights_sha256


def test_two_epochs_lower_the_loss_and_write_a_loadable_package(tmp_path):
    from worker.engine.segmenter import Segmenter

    path = _dataset(tmp_path / "ds")
    pkg = _tiny_train(path, tmp_path / "p", steps_per_epoch=6, lr=3e-3, dice_weight=0.0,
                      class_weights=None, batch_size=4)
    h = pkg.metrics["history"]
    assert [e["epoch"] for e in h] == [1, 2] and h[1]["loss"] < h[0]["loss"]
    labels = Segmenter(tmp_path / "p", device="cpu").segment_array(
        np.zeros((64, 64, 3), np.uint8), TileGeometry(64, 16))
    assert labels.shape == (64, 64) and labels.max() < 3


@pytest.mark.parametrize("average_tau", [None, 0.3])
def test_resume_continues_bit_for_bit_and_never_unpickles(tmp_path, monkeypatch, average_tau):
    import torch

    path = _dataset(tmp_path / "ds")
    full = _tiny_train(path, tmp_path / "full", final_eval=False, average_tau=average_tau)

    def interrupt(epoch, entry):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny_train(path, tmp_path / "cut", final_eval=False, on_epoch_end=interrupt,
                    average_tau=average_tau)
    ckpt = tmp_path / "cut" / "checkpoint"
    assert read_state(ckpt)["epoch"] == 1 and not (tmp_path / "cut" / "model.json").exists()
    assert {p.suffix for p in ckpt.iterdir()} == {".safetensors", ".json"}
    with pytest.raises(CheckpointError, match="--resume"):  # never overwritten silently
        _tiny_train(path, tmp_path / "cut", final_eval=False, average_tau=average_tau)
    with pytest.raises(CheckpointError, match=r"lr: 0.001 -> 0.002"):
        _tiny_train(path, tmp_path / "cut", final_eval=False, resume=True, lr=2e-3,
                    average_tau=average_tau)

    def no_pickle(*a, **k):
        raise AssertionError("torch.load must not be used to resume")

    monkeypatch.setattr(torch, "load", no_pickle)
    resumed = _tiny_train(path, tmp_path / "cut", final_eval=False, resume=True,
                          average_tau=average_tau)
    assert resumed.weights_sha256 == full.weights_sha256
    assert resumed.metrics["history"] == full.metrics["history"]
    assert resumed.training["resumed"] is True and read_state(ckpt)["epoch"] == 2
    assert ("averaged" in read_state(ckpt)["files"]) == bool(average_tau)


def test_weight_average_follows_the_weights_with_its_time_constant():
    torch = pytest.importorskip("torch")
    from training.averaging import WeightAverage

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.BatchNorm2d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    avg = WeightAverage(net, tau=0.1)
    avg.update(net, 0.0)  # the first update copies
    with torch.no_grad():
        net[0].weight.fill_(3.0)
        net[1].running_mean.fill_(2.0)
    avg.update(net, 0.1)  # one time constant later: 1 - 1/e of the way
    rate = 1 - math.exp(-1)
    assert avg.module[0].weight.item() == pytest.approx(1 + 2 * rate)
    assert avg.module[1].running_mean.item() == pytest.approx(2 * rate)  # buffers too
    assert net[0].weight.item() == 3.0  # the trained network is left alone
    again = WeightAverage(net, tau=0.1)
    again.load_state_dict(avg.state_dict())
    avg.update(net, 0.2)
    again.update(net, 0.2)  # restored progress: the same step
    assert again.module[0].weight.item() == pytest.approx(avg.module[0].weight.item())
    with pytest.raises(ValueError, match="time constant"):
        WeightAverage(net, tau=0)


def test_resume_refuses_a_corrupt_or_missing_checkpoint(tmp_path):
    path = _dataset(tmp_path / "ds")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _tiny_train(path, tmp_path / "p", final_eval=False, resume=True, epochs=1)
    _tiny_train(path, tmp_path / "p", final_eval=False, epochs=1)
    model_file = next((tmp_path / "p" / "checkpoint").glob("model-e1.safetensors"))
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        _tiny_train(path, tmp_path / "p", final_eval=False, resume=True, epochs=1)


def test_cli_train_defaults_registers_in_the_store_and_resumes(tmp_path):
    from click.testing import CliRunner

    from cli.train import train as train_cmd

    path = _dataset(tmp_path)
    home = tmp_path / "home"
    base = [str(path), "--encoder", "mobilenet_v2", "--arch-params",
            '{"decoder_channels": [16, 16, 16, 16, 16]}', "--epochs", "1", "--patch-size", "64",
            "--batch-size", "2", "--steps-per-epoch", "1", "--tile-size", "64", "--halo", "16",
            "--no-final-eval", "--home", str(home)]
    res = CliRunner().invoke(train_cmd, [*base, "--out", str(tmp_path / "p1")])
    assert res.exit_code == 0, res.output
    pkg = read_package(tmp_path / "p1")
    assert (pkg.name, pkg.version) == ("tiny-unet-mobilenet_v2", "1")
    stored = home / "store" / "models" / pkg.name / "1"
    assert read_package(stored).weights_sha256 == pkg.weights_sha256
    assert "registered tiny-unet-mobilenet_v2 1" in res.output
    # The next run gets the next version; --resume of a finished run keeps its version.
    res = CliRunner().invoke(train_cmd, [*base, "--out", str(tmp_path / "p2"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert read_package(tmp_path / "p2").version == "2"
    res = CliRunner().invoke(train_cmd, [*base, "--out", str(tmp_path / "p1"), "--resume"])
    assert res.exit_code == 0, res.output
    assert read_package(tmp_path / "p1").weights_sha256 == pkg.weights_sha256
    res = CliRunner().invoke(train_cmd, [*base, "--out", str(tmp_path / "p1")])
    assert res.exit_code != 0 and "pass --resume" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(train_cmd, [*base, "--out", str(tmp_path / "p3"), "--version", "2"])
    assert res.exit_code != 0 and "tiny-unet-mobilenet_v2 2 is already registered" in res.output
    assert not (tmp_path / "p3").exists()  # refused before any training


def test_an_ensemble_trains_serves_through_openvino_and_fine_tunes(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from worker.engine.ensemble import Ensemble, combine_logits
    from worker.engine.segmenter import Segmenter

    path = _dataset(tmp_path / "ds")
    pkg = _tiny_train(path, tmp_path / "p", epochs=1, members=2)
    assert pkg.members == read_package(tmp_path / "p").members == 2
    assert {"val_miou", "test_miou"} <= set(pkg.metrics)  # evaluated through the tiled path
    state = load_file(str(tmp_path / "p" / WEIGHTS_FILE))
    assert {k.split(".")[1] for k in state} == {"0", "1"}  # members.<k>.<name>
    first = next(k for k in state if k.startswith("members.0.") and state[k].ndim == 4)
    assert not torch.equal(state[first], state[first.replace("members.0.", "members.1.", 1)])
    model = build_model(pkg).eval()
    load_weights(model, tmp_path / "p")
    assert isinstance(model, Ensemble)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out, parts = model(x), model.member_logits(x)
    # the output's softmax is the members' mean probability
    mean_p = torch.stack([z.softmax(1) for z in parts]).mean(0)
    assert torch.allclose(out.softmax(1), mean_p, atol=1e-5)
    assert torch.allclose(out, combine_logits(parts))
    image = np.random.default_rng(0).integers(0, 255, (96, 150, 3), dtype=np.uint8)
    eager = Segmenter(tmp_path / "p", device="cpu", threads=1).segment_array(image)
    ov = Segmenter(tmp_path / "p", device="cpu", threads=1, runtime="openvino",
                   cache_dir=tmp_path / "cache").segment_array(image)
    assert np.mean(eager == ov) > 0.99  # the exported ensemble labels as eager does
    manifest = json.loads(next((tmp_path / "cache").rglob("manifest.json")).read_text())
    assert manifest["recipe"]["ensemble"]["members"] == 2  # part of the graph's cache key
    # fine-tuning takes the base package's member count
    tuned = _tiny_train(path, tmp_path / "q", epochs=1, init_from=tmp_path / "p",
                        final_eval=False)
    assert tuned.members == 2
    with pytest.raises(ValueError, match="members must be 1-8"):
        _tiny_train(path, tmp_path / "r", epochs=1, members=0)
