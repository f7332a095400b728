"""Tests of the default recipe (training.recipe), the time-budget schedule, fine-tuning from
a model package (--from) and the model card the trainer writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from core.geometry import DEFAULT_GEOMETRY, TileGeometry
from models.package import read_package
from tests.training.test_trainer import CLASSES, _dataset, _tiny_train
from training.recipe import (
    AUTO_SCALES,
    CPU_ENCODERS,
    EVAL_FIXED_S,
    EVAL_SAFETY,
    MAX_EVAL_RESERVE,
    MIN_ROUND_TRIP_IOU,
    MIN_STEPS_SHARE,
    TTA_MAX_COST,
    ZOOM_JITTER,
    choose_class_weights,
    choose_input_scale,
    choose_tta,
    default_recipe,
    describe_recipe,
    encoder_for_scale,
    fit_time_budget,
    geometry_for_scale,
    one_cycle_lr,
    resolve_recipe,
    round_trip_iou,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_one_cycle_warms_up_then_ends_low():
    peak = 2e-3
    lrs = [one_cycle_lr(f, peak) for f in np.linspace(0, 1, 201)]
    top = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(0.01 * peak) and max(lrs) == pytest.approx(peak)
    assert 0.02 <= top / 200 <= 0.04
    assert all(np.diff(lrs[:top + 1]) >= 0) and all(np.diff(lrs[top:]) <= 0)
    assert lrs[-1] == pytest.approx(0.01 * peak) and one_cycle_lr(1.7, peak) == lrs[-1]


def test_default_recipe_fits_budget_and_device():
    cpu = default_recipe(30)
    assert cpu["encoder"] == default_recipe(30, "cuda")["encoder"] == "auto"
    assert cpu["patch_size"] == 256
    assert cpu["call_budget_s"] == 1800 and "time_budget_s" not in cpu  # the trainer fits it
    assert default_recipe(30, "cuda")["patch_size"] == 512
    assert default_recipe(30, fine_tune=True)["lr"] == pytest.approx(0.3 * cpu["lr"])
    assert "resnet34 at a reduced input scale" in describe_recipe(cpu)
    assert "one-cycle" in describe_recipe(cpu)
    with pytest.raises(ValueError, match="max-minutes"):
        default_recipe(0)


def test_the_encoder_is_chosen_by_the_input_scale_and_device():
    assert CPU_ENCODERS == {"full": "resnet18", "reduced": "resnet34"}
    assert encoder_for_scale(1.0) == encoder_for_scale(1.0, "cpu") == "resnet18"
    assert encoder_for_scale(0.5) == encoder_for_scale(0.25) == "resnet34"
    assert encoder_for_scale(1.0, "cuda") == encoder_for_scale(1.0, "cuda:1") == "resnet34"
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        encoder_for_scale(0)


def test_resolve_recipe_makes_the_auto_choices_in_order():
    recipe = {**default_recipe(30), "patch_size": 32}  # the 128 px masks hold 32 px at 0.25
    blocks, crack = [_blocks_and_line(False)], [_blocks_and_line(True)]
    reduced = resolve_recipe(recipe, "cpu", blocks, 3, tile_size=2048)
    assert recipe["input_scale"] == recipe["encoder"] == "auto"  # the input is not changed
    assert reduced["input_scale"] == reduced["input_scale_choice"]["chosen"] == 0.25
    assert reduced["encoder"] == "resnet34"
    described = describe_recipe(reduced)
    assert "Unet / resnet34 (" in described and "0.25 x the image resolution" in described
    # a thin crack keeps the model at full resolution, and so the lighter CPU encoder
    full = resolve_recipe(recipe, "cpu", crack, 3, tile_size=1024)
    assert full["input_scale"] == 1.0 and full["encoder"] == "resnet18"
    assert resolve_recipe(recipe, "cuda", crack, 3, tile_size=1024)["encoder"] == "resnet34"
    # class weights: none for two large blocks (the absent crack class does not count) or
    # where the 1 px crack holds 0.78 % of the pixels, 1/sqrt shares beside a second mask of
    # blocks (0.39 %)
    assert reduced["class_weights"] is None and "no weights" in described
    assert full["class_weights"] is None and "at least 0.5%: no weights" in describe_recipe(full)
    rare = resolve_recipe(recipe, "cpu", crack + blocks, 3, tile_size=1024)
    assert rare["class_weights"] == rare["class_weights_choice"]["chosen"] == "inv_sqrt"
    assert "under 0.5%: 1/sqrt(pixel share) weights" in describe_recipe(rare)
    # what was given stays: a set scale and set weights need no masks, a set encoder is kept
    set_ = {**recipe, "class_weights": None}
    given = resolve_recipe({**set_, "input_scale": 0.5, "encoder": "resnet18"}, "cpu")
    assert (given["input_scale"], given["encoder"]) == (0.5, "resnet18")
    assert "input_scale_choice" not in given and "class_weights_choice" not in given
    assert resolve_recipe({**set_, "input_scale": 1.0}, "cpu")["encoder"] == "resnet18"
    with pytest.raises(ValueError, match="'auto' input_scale and class_weights need the training"):
        resolve_recipe(recipe, "cpu")
    with pytest.raises(ValueError, match="'auto' class_weights need the training masks"):
        resolve_recipe({**recipe, "input_scale": 1.0}, "cpu")


def test_auto_class_weights_only_where_a_class_is_rare():
    # class 2: 40 of 10,000 labelled px (0.4 %); 100 ignored px are not counted
    mask = np.zeros((101, 100), np.uint8)
    mask[50:] = 1
    mask[0] = 255
    mask[1, :40] = 2
    chosen, choice = choose_class_weights([mask], 3)
    assert chosen == choice["chosen"] == "inv_sqrt"
    assert choice["pixel_share"] == [0.486, 0.51, 0.004]  # rows 1-49 less 40 px; rows 50-100
    assert choice["reason"].startswith("the rarest class (index 2) holds 0.400% of")
    # at a 0.4 % threshold the same class is not rare
    assert choose_class_weights([mask], 3, rare_share=0.004)[0] is None
    # an absent class is not the rarest one (its weight would be 0 anyway)
    assert choose_class_weights([mask], 4)[1]["pixel_share"][3] == 0.0
    assert choose_class_weights([mask], 4)[0] == "inv_sqrt"
    assert choose_class_weights([np.where(mask == 2, 0, mask).astype(np.uint8)], 4)[0] is None
    with pytest.raises(ValueError, match="no labelled pixel"):
        choose_class_weights([np.full((4, 4), 255, np.uint8)], 3)
    assert default_recipe(30)["class_weights"] == "auto"


def _blocks_and_line(line: bool):
    """A 128 x 128 px mask of large blocks (classes 0, 1) and, if ``line``, a 1 px crack
    (class 2) across it; a few ignored pixels (255)."""
    mask = np.zeros((128, 128), np.uint8)
    mask[:, 64:] = 1
    mask[0, :4] = 255
    if line:
        mask[:, 30] = 2
    return mask


def test_round_trip_iou_keeps_large_grains_and_loses_thin_cracks():
    blocks = round_trip_iou([_blocks_and_line(False)], 3, 0.5)
    assert blocks[0] > 0.98 and blocks[1] > 0.98
    assert blocks[2] == 1.0  # absent class
    crack = round_trip_iou([_blocks_and_line(True)], 3, 0.5)
    assert crack[2] < 0.8 and crack[0] > 0.95
    assert round_trip_iou([_blocks_and_line(True)], 3, 1.0) == [1.0, 1.0, 1.0]


def test_auto_input_scale_reduces_only_where_every_class_survives():
    scale, choice = choose_input_scale([_blocks_and_line(False)], 3, tile_size=4096)
    # the strongest reduction tried first: large blocks survive an eighth of the resolution
    assert scale == choice["chosen"] == AUTO_SCALES[0] == 0.125
    assert "0.125 x the image resolution" in choice["reason"]
    assert min(choice["round_trip_iou"]["0.125"]) >= MIN_ROUND_TRIP_IOU == 0.92
    # a 1024 px tile would be 128 model px at 0.125 (< 256 is fine: a multiple of 32)
    assert choose_input_scale([_blocks_and_line(False)], 3, tile_size=1024)[0] == 0.125
    # 0.125 is skipped where the tile is not a multiple of 32 model px there (1280 -> 160 ok,
    # 1152 -> 144 not; 0.25 -> 288 is)
    assert choose_input_scale([_blocks_and_line(False)], 3, tile_size=1152)[0] == 0.25
    assert choose_input_scale([_blocks_and_line(False)], 3, 1024, candidates=(0.5,),
                              min_iou=0.98)[0] == 0.5
    scale, choice = choose_input_scale([_blocks_and_line(True)], 3, tile_size=1024)
    assert scale == 1.0 and "full resolution" in choice["reason"]
    assert choice["round_trip_iou"]["0.5"][2] < MIN_ROUND_TRIP_IOU  # the crack failed
    # a tile that would not be a multiple of 32 px at 0.5 rules the scale out untried
    scale, choice = choose_input_scale([_blocks_and_line(False)], 3, tile_size=96)
    assert scale == 1.0 and choice["round_trip_iou"] == {}
    # so does a 128 px mask that would be too small for a 96 px patch at 0.5 and 0.25
    scale, choice = choose_input_scale([_blocks_and_line(False)], 3, None, patch_size=96)
    assert scale == 1.0 and "patch size" in choice["reason"]
    assert default_recipe(30)["input_scale"] == default_recipe(30, "cuda")["input_scale"] == "auto"
    # the CLI's help states the same rule (its text cannot import the recipe: no torch there)
    from click.testing import CliRunner

    from cli.train import train as train_cmd

    help_text = " ".join(CliRunner().invoke(train_cmd, ["--help"]).output.split())
    assert (" and ".join([", ".join(f"{s:g}" for s in AUTO_SCALES[:-1]), f"{AUTO_SCALES[-1]:g}"])
            + f" at which every class keeps a round-trip IoU >= {MIN_ROUND_TRIP_IOU}") in help_text
    assert "auto: the strongest reduction (0.125 or 0.25 or 0.5 x)" \
        in describe_recipe(default_recipe(30))


def test_a_reduced_model_sees_512_px_tiles_by_default():
    assert geometry_for_scale(1) == geometry_for_scale(0.5) == DEFAULT_GEOMETRY  # 1024 / 128
    assert geometry_for_scale(0.25) == TileGeometry(2048, 256)
    assert geometry_for_scale(0.125) == TileGeometry(4096, 512)


def test_auto_input_scale_in_training_is_recorded_in_the_model_card(tmp_path):
    path = _dataset(tmp_path)
    pkg = _tiny_train(path, tmp_path / "p", patch_size=32, input_scale="auto", epochs=1,
                      final_eval=False, encoder="auto")
    choice = pkg.training["input_scale_choice"]
    assert pkg.encoder == encoder_for_scale(pkg.input_scale) == "resnet34"  # chosen after it
    # the tiny masks are large blocks; at 0.25 the 64 px images would not hold a 32 px patch
    assert pkg.input_scale == choice["chosen"] == 0.5
    assert set(choice["round_trip_iou"]) == {"0.5"}
    # without a geometry, the package gets the default for its scale
    auto = _tiny_train(path, tmp_path / "q", patch_size=32, input_scale=0.5, epochs=1,
                       final_eval=False, geometry=None)
    assert auto.geometry == geometry_for_scale(0.5)


def test_fit_time_budget_reserves_the_measured_final_evaluation():
    # 30 min call, 20 s of set-up, 18 s of evaluation measured: 2 x 18 + 30 s reserved
    b = fit_time_budget(1800, 20, 18)
    assert b["final_eval_reserve_s"] == EVAL_SAFETY * 18 + EVAL_FIXED_S == 66
    assert b["steps_s"] == 1800 - 20 - 66 and b["call_s"] == 1800
    # no final evaluation: nothing reserved
    assert fit_time_budget(1800, 20, None)["steps_s"] == 1780
    # a slow evaluation is capped at MAX_EVAL_RESERVE of the call, and at 10 min
    assert fit_time_budget(1800, 0, 1000)["final_eval_reserve_s"] == MAX_EVAL_RESERVE * 1800
    assert fit_time_budget(3 * 3600, 0, 1000)["final_eval_reserve_s"] == 600
    # a set-up that ate the call still leaves the steps MIN_STEPS_SHARE of it
    assert fit_time_budget(100, 500, 5)["steps_s"] == MIN_STEPS_SHARE * 100
    assert fit_time_budget(1.8, 2.5, 0.01)["steps_s"] == pytest.approx(0.2)  # rounded
    with pytest.raises(ValueError):
        fit_time_budget(0, 0, 1)


def _pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A black (h, w, 3) image and its (h, w) mask of class 1 with an ignored corner."""
    mask = np.ones((h, w), np.uint8)
    mask[:4, :4] = 255
    return np.zeros((h, w, 3), np.uint8), mask


def test_final_eval_estimate_counts_tiles_and_leaves_the_model_as_it_was(monkeypatch):
    import torch

    import training.evaluation as evaluation
    from training.trainer import final_eval_estimate_s

    monkeypatch.setattr(evaluation, "evaluate_arrays", lambda *a, **k: {})  # tiles alone

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    geo = TileGeometry(64, 16)  # stride 32
    one = final_eval_estimate_s(model, [_pair(32, 32)], geo, 1.0, "cpu")
    # 100 x 70 px: 4 x 3 tiles of stride 32, twice
    many = final_eval_estimate_s(model, [_pair(70, 100)] * 2, geo, 1.0, "cpu")
    assert one > 0 and many > 10 * one * 0.3  # 24 tiles against 1 (timing noise allowed)
    assert model.training and torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_final_eval_estimate_times_the_image_scale_steps_of_a_reduced_model(monkeypatch):
    import torch

    import training.trainer as trainer

    seen = []
    real = trainer.to_image_scale
    monkeypatch.setattr(trainer, "to_image_scale",
                        lambda logits, size: seen.append((tuple(logits.shape), size))
                        or real(logits, size))
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    trainer.final_eval_estimate_s(model, [_pair(70, 100)], TileGeometry(256, 32), 0.125, "cpu")
    # each timed pass took a 256 px image tile to 32 model px and its logits back to 256
    assert seen and all(s == ((1, 4, 32, 32), (256, 256)) for s in seen)


def test_final_eval_estimate_is_passes_times_tiles_plus_metrics_per_px(monkeypatch):
    import torch

    import training.trainer as trainer

    clock = iter(range(10_000))  # every reading of the clock is one second later
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: float(next(clock)))
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    # 100 x 70 px: 4 x 3 tiles of stride 32 (the fitted edge tiles need 64 px: a whole tile)
    geo = TileGeometry(64, 16)
    pairs = [_pair(70, 100), _pair(70, 100)]
    # a tile pass takes 1 s; the metrics 1 s for the first pair's 7,000 px, 2 s for both
    assert trainer.final_eval_estimate_s(model, pairs, geo, 1.0, "cpu") == 24 + 2
    assert trainer.final_eval_estimate_s(model, pairs, geo, 1.0, "cpu", label_passes=2) \
        == 2 * 24 + 2


def test_final_eval_estimate_counts_the_served_layout_s_shorter_tiles_by_area(monkeypatch):
    import torch

    import training.trainer as trainer
    from worker.engine.segmenter import serving_grid

    clock = iter(range(10_000))  # every reading of the clock is one second later
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: float(next(clock)))
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    geo = TileGeometry(128, 16)  # stride 96
    # 30 x 30 px fits one tile: 30 + 2 x 16 edge padding, on the 32 px unit: one 64 x 64 tile
    grid = serving_grid(30, 30, geo, 1.0)
    assert (grid.n_tile_rows, grid.n_cols, grid.tile_shape_at(grid.row_spans[0], 0)) == (1, 1, (64, 64))
    small = _pair(30, 30)
    # a quarter of a 128 px tile at 2 s a tile, twice (the serving check), plus 1 s of metrics
    assert trainer.final_eval_estimate_s(model, [small], geo, 1.0, "cpu", tile_s=2.0,
                                         label_passes=2) == 2 * 0.25 * 2.0 + 1
    # at input scale 0.125 the unit is 256 px: the same image takes one 256 px tile of 1,024
    grid = serving_grid(30, 30, TileGeometry(1024, 64), 0.125)
    assert grid.tile_shape_at(grid.row_spans[0], 0) == (256, 256)
    assert trainer.final_eval_estimate_s(model, [small], TileGeometry(1024, 64), 0.125, "cpu",
                                         tile_s=2.0) == 1 / 16 * 2.0 + 1


def test_final_eval_estimate_names_the_classes_it_is_given(monkeypatch):
    import torch

    import training.evaluation as evaluation
    import training.trainer as trainer

    names = []
    monkeypatch.setattr(evaluation, "evaluate_arrays",
                        lambda predict, data, n, *a, **k: names.append(n) or {})
    model = torch.nn.Conv2d(3, 4, 3, padding=1)  # 4 output channels
    trainer.final_eval_estimate_s(model, [_pair(32, 32)], TileGeometry(64, 16), 1.0, "cpu",
                                  tile_s=1.0, n_classes=6)
    assert names[-1] == [str(i) for i in range(6)]
    trainer.final_eval_estimate_s(model, [_pair(32, 32)], TileGeometry(64, 16), 1.0, "cpu",
                                  tile_s=1.0)
    assert names[-1] == ["0", "1", "2", "3"]  # none given: the last convolution's channels


def test_final_eval_estimate_adds_the_metrics_per_image_px(monkeypatch):
    import torch

    import training.evaluation as evaluation
    import training.trainer as trainer

    calls = []
    real = evaluation.evaluate_arrays

    def timed(predict, data, names, *args, **kwargs):
        calls.append((predict(data[0][0]), data, names))
        if len(calls) == 2:  # the timed call (the first warms up on a corner)
            time.sleep(0.2)  # the metrics take 0.2 s for the first pair
        return real(predict, data, names, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_arrays", timed)
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    geo = TileGeometry(64, 16)
    small, large = _pair(32, 32), _pair(64, 96)  # 1,024 and 6,144 px
    estimate = trainer.final_eval_estimate_s(model, [small, large], geo, 1.0, "cpu")
    # 0.2 s per 1,024 px, for 7,168 px: at least 1.4 s
    assert estimate >= 1.4
    assert len(calls) == 2 and calls[0][1][0][1].shape == (32, 32)  # the warm-up's corner
    (labels, confidence), data, names = calls[1]
    assert data[0][1] is small[1] and names == ["0", "1", "2", "3"]
    # the mask is its own prediction: the ignored corner becomes class 0, the rest stays 1
    assert labels[0, 0] == 0 and labels[10, 10] == 1 and (confidence == 255).all()


def test_call_budget_is_fitted_once_and_a_resume_keeps_it(tmp_path):
    path = _dataset(tmp_path)
    first = _tiny_train(path, tmp_path / "a", epochs=1, call_budget_s=4.0, steps_per_epoch=2,
                        validate_each_epoch=False)
    budget = first.training["time_budget"]
    assert budget["call_s"] == 4.0 and budget["final_eval_estimate_s"] > 0
    assert first.training["time_budget_s"] == budget["steps_s"] < 4.0
    # no val/test images evaluated at the end: nothing reserved for it
    quiet = _tiny_train(path, tmp_path / "b", epochs=1, call_budget_s=4.0, steps_per_epoch=2,
                        validate_each_epoch=False, final_eval=False)
    assert quiet.training["time_budget"]["final_eval_estimate_s"] is None
    assert quiet.training["time_budget"]["final_eval_reserve_s"] == 0
    # resuming with another call budget continues the schedule the checkpoint started
    again = _tiny_train(path, tmp_path / "a", epochs=1, call_budget_s=50.0, steps_per_epoch=2,
                        validate_each_epoch=False, resume=True)
    assert again.training["time_budget_s"] == first.training["time_budget_s"]


def test_time_budget_run_and_fine_tune(tmp_path):
    path = _dataset(tmp_path)
    pkg = _tiny_train(path, tmp_path / "a", epochs=1, time_budget_s=2.0, steps_per_epoch=3,
                      validate_each_epoch=False, recipe={"why": "test"})
    t = pkg.training
    assert t["steps"] >= 1 and t["steps"] == pkg.metrics["history"][-1]["steps"]
    assert t["patches"] == 2 * t["steps"] and t["recipe"] == {"why": "test"}
    assert "one-cycle" in t["optimizer"] and "val_miou" not in pkg.metrics["history"][-1]
    assert "val_miou" in pkg.metrics and set(pkg.metrics["val_iou"]) == {"bg", "oxide", "crack"}
    assert t["data"]["split_images"]["train"] == ["a", "b"] and t["minutes"] >= 0
    # Fine-tune: architecture and normalisation come from the base package.
    ft = _tiny_train(path, tmp_path / "b", epochs=1, init_from=tmp_path / "a",
                     arch_params={"decoder_channels": [8, 8, 8, 8, 8]}, final_eval=False)
    assert ft.arch_params == pkg.arch_params and ft.normalisation == pkg.normalisation
    assert ft.training["init_from"]["sha256"] == pkg.weights_sha256


def test_fine_tune_rejects_other_class_table(tmp_path):
    path = _dataset(tmp_path)
    _tiny_train(path, tmp_path / "a", epochs=1, final_eval=False)
    other = yaml.safe_load(path.read_text())
    other["classes"] = [CLASSES[0], {**CLASSES[1], "name": "hematite"}, CLASSES[2]]
    other_path = tmp_path / "other.yaml"
    other_path.write_text(yaml.safe_dump(other))
    with pytest.raises(ValueError, match=r"class 1: model \('oxide', 5\) vs dataset "
                                         r"\('hematite', 5\)"):
        _tiny_train(other_path, tmp_path / "b", epochs=1, init_from=tmp_path / "a")
    from click.testing import CliRunner

    from cli.train import train as train_cmd

    res = CliRunner().invoke(train_cmd, [str(other_path), "--out", str(tmp_path / "c"),
                                         "--epochs", "1", "--from", str(tmp_path / "a"),
                                         "--no-register", "--home", str(tmp_path / "home")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "hematite" in res.output and "same class table" in res.output


def test_cli_default_recipe_prints_choices_and_from(tmp_path):
    from click.testing import CliRunner

    from cli.train import train as train_cmd

    path = _dataset(tmp_path)
    home = str(tmp_path / "home")
    small = ["--patch-size", "64", "--batch-size", "2", "--steps-per-epoch", "2",
             "--tile-size", "64", "--halo", "16", "--no-register", "--home", home]
    res = CliRunner().invoke(train_cmd, [str(path), "--out", str(tmp_path / "p"),
                                         "--max-minutes", "0.03", *small,
                                         "--encoder", "mobilenet_v2", "--arch-params",
                                         '{"decoder_channels": [8, 8, 8, 8, 8]}'])
    assert res.exit_code == 0, res.output
    assert "default recipe for 0.03 min" in res.output and "one-cycle" in res.output
    assert "overridden on the command line" in res.output and "'patch_size'" in res.output
    card = json.loads((tmp_path / "p" / "model.json").read_text())
    assert card["training"]["recipe"]["patch_size"] == 64
    # the recipe's auto weights: none, the tiny masks' rarest class holds 12.5 % of the pixels
    assert card["training"]["recipe"]["class_weights"] is None
    assert card["training"]["class_weights_choice"]["pixel_share"][2] == 0.125
    assert "cross-entropy (class weights auto: the rarest class (index 2) holds 12.500%" \
        in res.output and "at least 0.5%: no weights" in res.output
    # the precision is measured (or ruled out by the CPU) and said, before the time budget
    assert "precision  auto: bfloat16 autocast on CPU" in res.output and "precision: " in res.output
    assert card["training"]["cpu_bf16"]["mode"] == "auto"
    budget = card["training"]["time_budget"]
    # fitted before the first step: the call less the set-up and the measured final evaluation
    assert budget["call_s"] == 1.8 and budget["final_eval_estimate_s"] > 0
    assert card["training"]["time_budget_s"] == budget["steps_s"] == pytest.approx(
        max(budget["call_s"] - budget["setup_s"] - budget["final_eval_reserve_s"],
            MIN_STEPS_SHARE * budget["call_s"]), abs=0.11)
    assert "time budget:" in res.output and "final evaluation ~" in res.output
    res2 = CliRunner().invoke(train_cmd, [str(path), "--out", str(tmp_path / "q"),
                                          "--max-minutes", "0.03", "--from",
                                          str(tmp_path / "p"), *small])
    assert res2.exit_code == 0, res2.output
    assert "fine-tuning" in res2.output and f"weights of {tmp_path / 'p'}" in res2.output
    q = read_package(tmp_path / "q")
    assert q.encoder == "mobilenet_v2" and q.training["init_from"]["name"] == q.name
    assert q.training["lr"] == pytest.approx(0.3 * 2e-3)
    # the recipe's random zoom, said and used, unless given (below)
    assert "random zoom x 1/4-4" in res2.output and q.training["scale_jitter"] == ZOOM_JITTER
    # no --encoder: the recipe's choice for the scale, printed and in the package name
    auto = CliRunner().invoke(train_cmd, [str(path), "--out", str(tmp_path / "s"),
                                          "--max-minutes", "0.03", "--input-scale", "1",
                                          "--arch-params", '{"decoder_channels": [8, 8, 8, 8, 8]}',
                                          "--scale-jitter", "0.3", *small])
    assert auto.exit_code == 0, auto.output
    assert "random zoom x 1/1.3-1.3" in auto.output  # said, and used by the sampler
    assert read_package(tmp_path / "s").training["scale_jitter"] == 0.3
    assert "Unet / resnet18 (" in auto.output and "auto: resnet34" not in auto.output
    s_pkg = read_package(tmp_path / "s")
    assert s_pkg.encoder == "resnet18" and s_pkg.name.endswith("-unet-resnet18")
    assert s_pkg.training["recipe"]["encoder"] == "resnet18"
    none = CliRunner().invoke(train_cmd, [str(path), "--out", str(tmp_path / "r"), *small])
    assert none.exit_code != 0 and "--max-minutes" in none.output


def test_cli_class_weights_none_or_inv_sqrt_override_the_recipe(tmp_path):
    from click.testing import CliRunner

    from cli.train import train as train_cmd

    path = _dataset(tmp_path)
    small = ["--patch-size", "64", "--batch-size", "2", "--steps-per-epoch", "2",
             "--tile-size", "64", "--halo", "16", "--no-register", "--home",
             str(tmp_path / "home"), "--encoder", "mobilenet_v2", "--arch-params",
             '{"decoder_channels": [8, 8, 8, 8, 8]}', "--max-minutes", "0.03"]
    res = CliRunner().invoke(train_cmd, [str(path), "--out", str(tmp_path / "p"),
                                         "--class-weights", "None", *small])
    assert res.exit_code == 0, res.output
    assert "cross-entropy (class weights none)" in res.output
    assert "'class_weights'" in res.output  # listed among the overrides
    assert read_package(tmp_path / "p").training["class_weights"] is None
    inv = CliRunner().invoke(train_cmd, [str(path), "--out", str(tmp_path / "i"),
                                         "--class-weights", "inv_sqrt", *small])
    assert inv.exit_code == 0, inv.output
    weights = read_package(tmp_path / "i").training["class_weights"]
    assert len(weights) == len(CLASSES) and len(set(weights)) > 1  # 1/sqrt of unequal shares
    bad = CliRunner().invoke(train_cmd, [str(path), "--out", str(tmp_path / "q"),
                                         "--class-weights", "1,heavy,1", *small])
    assert bad.exit_code != 0 and "'inv_sqrt', 'auto', 'none' or comma-separated floats" \
        in bad.output
    assert not (tmp_path / "q").exists()
    # 'auto' outside the recipe: the trainer chooses on the training masks and records why
    pkg = _tiny_train(path, tmp_path / "a", patch_size=32, epochs=1, final_eval=False,
                      class_weights="auto")
    assert pkg.training["class_weights"] is None
    assert pkg.training["class_weights_choice"]["chosen"] is None
    assert pkg.training["class_weights_choice"]["pixel_share"] == [0.375, 0.5, 0.125]


def test_cli_targets_fractions_overrides_the_recipe_and_is_recorded(tmp_path):
    from click.testing import CliRunner

    from cli.train import train as train_cmd

    path = _dataset(tmp_path)
    res = CliRunner().invoke(train_cmd, [
        str(path), "--out", str(tmp_path / "p"), "--targets", "fractions", "--input-scale", "0.5",
        "--patch-size", "32", "--batch-size", "2", "--steps-per-epoch", "2", "--tile-size", "64",
        "--halo", "16", "--no-register", "--home", str(tmp_path / "home"), "--encoder",
        "mobilenet_v2", "--arch-params", '{"decoder_channels": [8, 8, 8, 8, 8]}',
        "--max-minutes", "0.03"])
    assert res.exit_code == 0, res.output
    assert "soft dice, on class fractions at a reduced scale" in res.output
    assert "'targets'" in res.output  # listed among the overrides
    assert read_package(tmp_path / "p").training["targets"] == "fractions"
    assert default_recipe(30)["targets"] == "labels"


@pytest.mark.parametrize(("dataset", "chosen", "worst", "weights"), [
    # large sulphide and oxide grains: an eighth of the resolution (pentlandite 0.9296); the
    # rarest class (magnetite) holds 0.77 % of the pixels: no class weights
    ("lumenstone-s2", 0.125, (0.92, 0.935), None),
    # thin cracks: half (crack 0.936 there, 0.743 at 0.25); cracks are 0.27 % of the pixels
    ("nasa-ebc", 0.5, (0.93, 0.94), "inv_sqrt"),
])
def test_auto_choices_on_the_real_training_masks(shared_data, dataset, chosen, worst, weights):
    from training.datasets import load_dataset_spec, load_masks

    spec = load_dataset_spec(Path(__file__).parents[2] / "datasets" / dataset / "dataset.yaml")
    masks = load_masks(spec, spec.split_stems()["train"])
    scale, choice = choose_input_scale(masks, len(spec.classes), None, 256)
    assert scale == choice["chosen"] == chosen
    assert worst[0] <= min(choice["round_trip_iou"][f"{chosen:g}"]) < worst[1]
    # every stronger reduction tried failed the rule
    assert all(min(v) < MIN_ROUND_TRIP_IOU for k, v in choice["round_trip_iou"].items()
               if float(k) < chosen)
    assert choose_class_weights(masks, len(spec.classes))[0] == weights


def test_flips_are_taken_where_a_served_tile_with_them_costs_at_most_the_limit():
    assert TTA_MAX_COST == 2.0
    tta, record = choose_tta(1.25, 2.3)  # run 36's 0.125 package: 1.84 x
    assert tta == record["tta"] == "flips" and record["cost"] == pytest.approx(1.84)
    assert "1.25 s, 2.30 s with flips (1.84 x): flips taken (up to 2 x)" in record["reason"]
    assert choose_tta(1.0, 2.0)[0] == "flips"  # at the limit
    assert choose_tta(1.0, 3.6)[0] == "none"  # full resolution (run 5: 3.6 x)
    assert "not taken" in choose_tta(1.0, 3.6)[1]["reason"]
    with pytest.raises(ValueError, match="> 0 s"):
        choose_tta(0.0, 1.0)
    assert "test-time flips where a tile with them takes <= 2 x the time without" \
        in describe_recipe(default_recipe(30))
    assert "one forward pass per tile" in describe_recipe({**default_recipe(30), "tta": "none"})


def test_serving_tile_s_with_flips_runs_four_passes_and_leaves_the_model_as_it_was(
        monkeypatch):
    import torch

    import training.trainer as trainer

    calls = []
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    model.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clock = iter(range(10_000))  # every reading of the clock is one second later
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: float(next(clock)))
    assert trainer.serving_tile_s(model, 256, 0.125, "cpu") == 1.0
    assert len(calls) == 3 and calls[0] == (1, 3, 32, 32)  # a warm-up and two timed passes
    calls.clear()
    assert trainer.serving_tile_s(model, 256, 0.125, "cpu", flips=True) == 1.0
    assert len(calls) == 3 * 4  # four flips per pass
    assert model.training and all(torch.equal(before[k], v)
                                  for k, v in model.state_dict().items())
    # a measured tile time is used as given: no tile is timed, only the metrics
    pairs = [_pair(70, 100), _pair(70, 100)]  # 12 tiles of stride 32 each
    calls.clear()
    estimate = trainer.final_eval_estimate_s(model, pairs, TileGeometry(64, 16), 1.0, "cpu",
                                             tile_s=0.5)
    assert not calls and estimate == 24 * 0.5 + 2  # the metrics: 1 s per 7,000 px


def test_tta_auto_is_measured_at_set_up_and_served_by_the_final_evaluation(tmp_path,
                                                                          monkeypatch):
    import training.trainer as trainer

    path = _dataset(tmp_path / "ds")
    timed = []

    def tile_s(model, side, scale, device, *, flips=False):
        timed.append((side, scale, flips))
        return cost if flips else 1.0

    monkeypatch.setattr(trainer, "serving_tile_s", tile_s)
    cost = 1.5
    pkg = _tiny_train(path, tmp_path / "a", epochs=1, tta="auto")
    assert timed == [(64, 1.0, False), (64, 1.0, True)]
    assert pkg.tta == read_package(tmp_path / "a").tta == "flips"
    assert pkg.training["tta_choice"]["cost"] == 1.5
    assert "tta flips" in pkg.metrics["evaluated_with"]  # the final evaluation served it so
    cost = 2.5
    assert _tiny_train(path, tmp_path / "b", epochs=1, tta="auto",
                       final_eval=False).tta == "none"
    timed.clear()
    given = _tiny_train(path, tmp_path / "c", epochs=1, tta="flips", final_eval=False)
    assert given.tta == "flips" and given.training["tta_choice"] is None and not timed
    # a call budget reserves the final evaluation of a tile served with the given flips
    _tiny_train(path, tmp_path / "e", epochs=1, tta="flips", call_budget_s=4.0,
                validate_each_epoch=False)
    assert timed == [(64, 1.0, True)]
    with pytest.raises(ValueError, match="tta must be one of"):
        _tiny_train(path, tmp_path / "d", epochs=1, tta="rotations")
