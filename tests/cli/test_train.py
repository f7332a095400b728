"""``pelletseg train``'s options against what the trainer accepts."""

from __future__ import annotations

from cli.train import train
from training.precision import CPU_BF16_MODES
from training.recipe import _AUGMENT_WORDS, TTA_MAX_COST, TTA_MODES, default_recipe
from training.sampling import AUGMENTS, BORDERS
from training.trainer import TARGETS


def test_the_written_out_choices_are_the_trainers_kinds():
    # cli/train.py writes the list out (the API process loads it and must not import
    # training); it must name exactly the kinds the trainer and the recipe know
    option = next(p for p in train.params if p.name == "augment")
    assert sorted(option.type.choices) == sorted(AUGMENTS) == sorted(_AUGMENT_WORDS)
    assert option.default in AUGMENTS
    # the same for the loss targets and the CPU precision modes
    options = {p.name: p for p in train.params}
    assert sorted(options["targets"].type.choices) == sorted(TARGETS)
    assert sorted(options["cpu_bf16"].type.choices) == sorted(CPU_BF16_MODES)
    assert options["targets"].default == "labels" and options["cpu_bf16"].default == "off"
    assert sorted(options["border"].type.choices) == sorted(BORDERS)
    assert options["border"].default == "none"
    assert sorted(options["tta"].type.choices) == sorted(TTA_MODES)
    assert options["tta"].default == "none" and default_recipe(30)["tta"] == "auto"
    assert f"{TTA_MAX_COST:g} x" in options["tta"].help
