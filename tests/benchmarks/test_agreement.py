"""The int8 candidates of ``pelletseg agreement`` (benchmarks/agreement.py) on the tiny package
and a synthetic data folder: what is quantised, what is kept in float32, and the
accuracy-controlled variant's promise on its validation tiles."""

import numpy as np
import pytest

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")

TILE = 32  # calibration / validation tile (px); the tiny package's tile is 128 px


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """lumenstone-s2/images/train: 3 RGB JPEGs; nasa-ebc/images: 3 grey PNGs (the first is
    skipped as if it were in the compared mosaics)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    train = root / "lumenstone-s2" / "images" / "train"
    ebc = root / "nasa-ebc" / "images"
    train.mkdir(parents=True)
    ebc.mkdir(parents=True)
    yy, xx = np.mgrid[:200, :260]
    for i in range(3):
        base = (np.sin(xx / (9 + i)) + np.cos(yy / (7 + 2 * i))) * 60 + 128
        rgb = np.clip(base[..., None] + rng.normal(0, 20, (200, 260, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(train / f"{i:02d}.jpg", quality=92)
        grey = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(grey[:160, :160]).save(ebc / f"{i:02d}.png")
    return root


def _ops(xml):
    return list(ov.Core().read_model(str(xml)).get_ordered_ops())


def _fed_by_fake_quantize(op) -> bool:
    return any(op.input_value(k).get_node().get_type_name() == "FakeQuantize"
               for k in range(op.get_input_size()))


def test_tiles_leave_out_the_compared_images(data_dir, tiny_package):
    from benchmarks.agreement import int8_tiles
    from worker.engine.segmenter import Segmenter

    seg = Segmenter(tiny_package, device="cpu", threads=1)
    calibration, validation = int8_tiles(data_dir, seg, ebc_skip=1, tile=TILE)
    # 3 training images (of the 16 asked) + 2 tiles of each of the 2 EBC images after the first
    assert len(calibration) == 3 + 4
    assert len(validation) == 3 + 2
    assert all(t.shape == (1, 3, TILE, TILE) and t.dtype == np.float32 for t in calibration)
    # the validation tiles of the training images are other places than their calibration
    # tiles, but for the first image (both at its top-left corner)
    assert np.array_equal(validation[0], calibration[0])
    assert not any(np.array_equal(v, c) for v in validation[1:3] for c in calibration[:3])
    _, fewer = int8_tiles(data_dir, seg, ebc_skip=2, tile=TILE)
    assert len(fewer) == 3 + 1


def test_int8_quantises_all_but_the_first_convolutions(tmp_path, data_dir, tiny_package):
    from benchmarks.agreement import openvino_int8_segmenter
    from worker.engine.runtimes import CONVOLUTIONS

    every = openvino_int8_segmenter(tiny_package, data_dir, tmp_path, 1, "openvino-int8",
                                    ebc_skip=1, tile=TILE)
    kept = openvino_int8_segmenter(tiny_package, data_dir, tmp_path, 1, "openvino-int8@2",
                                   ebc_skip=1, tile=TILE)
    assert every.runtime.name == "openvino-int8" and kept.runtime.name == "openvino-int8@2"
    convs = every.runtime.int8_convolutions[1]
    assert convs > 4
    assert every.runtime.int8_convolutions == (convs, convs)
    assert kept.runtime.int8_convolutions == (convs - 2, convs)
    ops = [op for op in _ops(tmp_path / "int8" / "openvino-int8-2.xml")
           if op.get_type_name() in CONVOLUTIONS]
    # the first two read float32 weights and unquantised activations
    assert [op.input_value(1).get_node().get_type_name() for op in ops[:2]] == ["Constant"] * 2
    assert [op.input_value(1).get_node().get_element_type().get_type_name()
            for op in ops[:2]] == ["f32"] * 2
    assert not any(_fed_by_fake_quantize(op) for op in ops[:2])
    # it runs the worker's path: uint8 tiles in, labels of the package's classes out
    image = np.random.default_rng(0).integers(0, 256, (150, 170, 3), dtype=np.uint8)
    labels = kept.segment_array(image, kept.package.geometry, batch_size=1)
    assert labels.shape == (150, 170) and labels.dtype == np.uint8
    assert labels.max() < len(kept.package.classes)


def test_accuracy_control_keeps_the_validation_labels(tmp_path, data_dir, tiny_package):
    """Plain int8 changes more of the validation tiles' labels than allowed (a random network's
    labels have small margins); the accuracy-controlled graph changes at most INT8_MAX_DROP."""
    from benchmarks.agreement import INT8_MAX_DROP, int8_tiles, openvino_int8_segmenter

    for name in ("openvino-int8", "openvino-int8-ac@0"):
        seg = openvino_int8_segmenter(tiny_package, data_dir, tmp_path, 1, name, ebc_skip=1,
                                      tile=TILE)
    _, validation = int8_tiles(data_dir, seg, ebc_skip=1, tile=TILE)
    core = ov.Core()
    graph = sorted((tmp_path / "exported").rglob("model.onnx"))[0]
    reference = core.compile_model(str(graph), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    want = [np.asarray(reference(v)[0]).argmax(1) for v in validation]

    def changed(xml) -> float:
        compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return float(np.mean(np.concatenate([
            (np.asarray(compiled(v)[0]).argmax(1) != w).ravel()
            for v, w in zip(validation, want, strict=True)])))

    assert changed(tmp_path / "int8" / "openvino-int8.xml") > INT8_MAX_DROP
    assert changed(tmp_path / "int8" / "openvino-int8-ac-0.xml") <= INT8_MAX_DROP + 1e-9
    int8, convs = seg.runtime.int8_convolutions
    assert int8 < convs  # it had to return convolutions to float32


@pytest.mark.parametrize("name", ["openvino-int8@x", "openvino-int8-ac", "openvino-bf16@2"])
def test_int8_names_are_checked(tmp_path, data_dir, tiny_package, name):
    from benchmarks.agreement import openvino_int8_segmenter

    with pytest.raises(ValueError, match="openvino-int8-ac@N"):
        openvino_int8_segmenter(tiny_package, data_dir, tmp_path, 1, name, ebc_skip=1, tile=TILE)


def test_the_markdown_says_how_many_convolutions_are_int8():
    from benchmarks.agreement import markdown

    share = {"lumenstone-s2": {"min_pct": 99.5, "pooled_pct": 99.7}}
    entry = {"tile_size": 1728, "halo": 96, "seconds": 12.0, "vs_eager_tiled": share,
             "vs_whole_image": share, "images": []}
    doc = {"package": "p", "threads": 1, "load_average_start": 1.0, "load_average_end": 1.1,
           "images": [{"dataset": "lumenstone-s2", "name": "val/01.jpg"}], "geometry": [],
           "runtimes": [{**entry, "runtime": "openvino-int8@9", "int8_convolutions": [54, 63]},
                        {**entry, "runtime": "openvino", "int8_convolutions": None}]}
    text = markdown(doc)
    assert "| openvino-int8@9 (54/63 convolutions int8) | 1728 / 96 | 99.5000 / 99.7000 |" in text
    assert "| openvino | 1728 / 96 |" in text


def test_candidate_names_give_their_base_and_float32_convolutions():
    from benchmarks.agreement import OPENVINO_BF16, OPENVINO_INT8, OPENVINO_INT8_AC, candidate

    int8 = {OPENVINO_INT8: False, OPENVINO_INT8_AC: True}
    assert candidate("openvino-bf16", {OPENVINO_BF16: False}) == ("openvino-bf16", 0)
    assert candidate("openvino-bf16@9", {OPENVINO_BF16: False}) == ("openvino-bf16", 9)
    assert candidate("openvino-int8-ac@0", int8) == ("openvino-int8-ac", 0)
    for bad in ["openvino-bf16@", "openvino-bf16@-1", "openvino-bf16@x", "openvino-int8@2"]:
        with pytest.raises(ValueError, match=r"expected openvino-bf16, openvino-bf16@N"):
            candidate(bad, {OPENVINO_BF16: False})
    with pytest.raises(ValueError, match=r"openvino-int8, openvino-int8@N, openvino-int8-ac@N"):
        candidate("openvino-int8-ac", int8)
