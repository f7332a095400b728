"""CPU training precision: the bfloat16 choice is as given or measured, leaves the run's
model and random draws untouched, and a bfloat16 run trains and says so in its card."""

from __future__ import annotations

import pytest

from tests.training.test_trainer import _dataset, _tiny_train
from training.precision import MIN_BF16_SPEEDUP, choose_cpu_bf16


def _model():
    import segmentation_models_pytorch as smp

    return smp.Unet("mobilenet_v2", encoder_weights=None, classes=3,
                    decoder_channels=[8, 8, 8, 8, 8])


def test_choose_cpu_bf16_as_given_or_measured():
    torch = pytest.importorskip("torch")
    model = _model()
    assert choose_cpu_bf16("on", model, 2, 32, 3)[0] is True
    used, record = choose_cpu_bf16("off", model, 2, 32, 3)
    assert used is False and record["fp32_step_s"] is None and "as given" in record["reason"]
    assert choose_cpu_bf16("on", model, 2, 32, 3, device="cuda")[0] is False
    with pytest.raises(ValueError, match="cpu_bf16 must be one of"):
        choose_cpu_bf16("fast", model, 2, 32, 3)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    used, record = choose_cpu_bf16("auto", model, 2, 64, 3)
    # measured on a copy with its own generator: weights, batch-norm statistics and the
    # global random state of the run are as they were
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())
    if "AVX512" in torch.backends.cpu.get_cpu_capability():
        assert record["fp32_step_s"] > 0 and record["bf16_step_s"] > 0
        assert used == (record["fp32_step_s"] >= MIN_BF16_SPEEDUP * record["bf16_step_s"])
    else:
        assert used is False and record["bf16_step_s"] is None and "no AVX-512" in record["reason"]
    assert record["used"] is used and record["mode"] == "auto"


def test_a_bf16_run_trains_and_is_recorded(tmp_path):
    path = _dataset(tmp_path / "ds")
    bf16 = _tiny_train(path, tmp_path / "b", epochs=1, cpu_bf16="on", final_eval=False)
    assert bf16.training["amp"] == "bfloat16 autocast (CPU)"
    assert bf16.training["cpu_bf16"]["used"] is True
    fp32 = _tiny_train(path, tmp_path / "f", epochs=1, final_eval=False)
    assert fp32.training["amp"] is None and fp32.training["cpu_bf16"]["used"] is False
    assert bf16.weights_sha256 != fp32.weights_sha256  # the forward pass ran in bfloat16
    with pytest.raises(ValueError, match="cpu_bf16 must be one of"):
        _tiny_train(path, tmp_path / "x", epochs=1, cpu_bf16="yes")


def test_serving_in_bf16_is_decided_by_the_labels_of_each_image(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import training.precision as tp
    import worker.engine.runtimes as rt
    from training.datasets import load_dataset_spec, load_split

    path = _dataset(tmp_path / "ds")
    _tiny_train(path, tmp_path / "p", epochs=1, final_eval=False)
    images = [img for img, _ in load_split(load_dataset_spec(path), ["c", "d"])]

    nothing = tp.inference_bf16_agreement(tmp_path / "p", [])
    assert nothing["measured"] is False and nothing["cpu_precision"] == "f32"
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: False)
    absent = tp.inference_bf16_agreement(tmp_path / "p", images)
    assert absent["measured"] is False and "no bfloat16 units" in absent["reason"]

    # the labels are compared for real; the decision follows the worst image against the
    # threshold (where the CPU has no bfloat16 units OpenVINO computes float32 here)
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: True)
    record = tp.inference_bf16_agreement(tmp_path / "p", images, ["val/c", "test/d"])
    assert record["measured"] is True and [r["name"] for r in record["images"]] == ["val/c", "test/d"]
    assert all(r["pixels"] == 64 * 64 for r in record["images"])
    assert record["min_pct"] == min(r["equal_pct"] for r in record["images"])
    assert record["min_pct"] <= record["pooled_pct"] <= 100
    assert record["cpu_precision"] == ("bf16" if record["min_pct"] >= 99.9 else "f32")
    # the final evaluation's eager float32 labels, handed over, give the same record; and
    # they are what is compared (other labels give another figure)
    import numpy as np

    from worker.engine.segmenter import Segmenter

    eager = Segmenter(tmp_path / "p", device="cpu", precision="fp32")
    labels = [eager.segment_array(img, eager.package.geometry) for img in images]
    given = tp.inference_bf16_agreement(tmp_path / "p", images, ["val/c", "test/d"],
                                        reference=labels)
    assert given == record
    flipped = [(x + 1) % eager.package.n_classes for x in labels]
    other = tp.inference_bf16_agreement(tmp_path / "p", images, reference=flipped)
    assert other["min_pct"] < record["min_pct"] and np.all(labels[0] != flipped[0])
    monkeypatch.setattr(tp, "MIN_BF16_AGREEMENT_PCT", 100.01)  # unreachable
    strict = tp.inference_bf16_agreement(tmp_path / "p", images)
    assert strict["cpu_precision"] == "f32" and "float32" in strict["reason"]
    monkeypatch.setattr(tp, "MIN_BF16_AGREEMENT_PCT", 0.0)
    assert tp.inference_bf16_agreement(tmp_path / "p", images)["cpu_precision"] == "bf16"


def test_a_trained_package_records_its_serving_precision(tmp_path, monkeypatch):
    import worker.engine.runtimes as rt

    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: False)
    pkg = _tiny_train(_dataset(tmp_path / "ds"), tmp_path / "p", epochs=1)
    record = pkg.metrics["cpu_bf16_agreement"]
    assert record["measured"] is False and pkg.cpu_precision == "f32"


def test_serving_in_bf16_takes_the_fewest_leading_float32_convolutions_that_keep_the_labels(
        tiny_package, monkeypatch):
    """Each rung of the ladder (raised to a count the graph allows) builds the runtime it
    names; the first rung whose worst image keeps the threshold is taken, and a rung past the
    graph's convolutions ends the ladder."""
    pytest.importorskip("openvino")
    import numpy as np

    import training.precision as tp
    import worker.engine.runtimes as rt
    from worker.engine.segmenter import Segmenter

    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: True)
    cuts = Segmenter(tiny_package, device="cpu", runtime="openvino",
                     cpu_precision="bf16").runtime.float32_cuts()
    rungs = [0, *dict.fromkeys(min(c for c in cuts if c >= r) for r in tp.F32_CONVS_LADDER[1:]
                               if r <= cuts[-1])]
    assert len(rungs) >= 3 and rungs[1] < rungs[2] and cuts[0] > 1  # no residual block split
    worst = [99.70, 99.85, 99.93, 99.95]  # per rung, fewest first: like the bundled model
    seen = []

    def agreement(segmenter, images, names, reference):
        seen.append(segmenter.runtime.f32_convs)
        w = worst[len(seen) - 1]
        return {"min_pct": w, "pooled_pct": w + 0.01,
                "images": [{"name": n, "pixels": 4, "equal_pct": w} for n in names]}

    monkeypatch.setattr(tp, "_agreement", agreement)
    image = np.zeros((64, 64, 3), np.uint8)
    reference = [np.zeros((64, 64), np.uint8)]
    record = tp.inference_bf16_agreement(tiny_package, [image], ["val/a"], reference=reference)
    assert seen == rungs[:3]
    assert record["cpu_precision"] == "bf16" and record["cpu_f32_convs"] == rungs[2]
    assert record["min_pct"] == 99.93
    assert [t["cpu_f32_convs"] for t in record["tries"]] == rungs[:3]
    assert f"first {rungs[2]} convolutions in float32" in record["reason"]

    seen.clear()
    worst[0] = 99.95  # all-bfloat16 keeps the labels: nothing more is tried
    record = tp.inference_bf16_agreement(tiny_package, [image], reference=reference)
    assert seen == [0] and record["cpu_precision"] == "bf16" and record["cpu_f32_convs"] == 0

    seen.clear()
    worst[:] = [99.5, 99.6, 99.99, 99.99]
    monkeypatch.setattr(tp, "F32_CONVS_LADDER", (0, 4, 10**6))  # past the graph's convolutions
    record = tp.inference_bf16_agreement(tiny_package, [image], reference=reference)
    assert seen == rungs[:2] and record["cpu_precision"] == "f32" and record["cpu_f32_convs"] == 0
    assert record["min_pct"] == 99.6 and "float32" in record["reason"]
