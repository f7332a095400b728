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
