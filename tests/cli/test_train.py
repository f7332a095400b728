"""``pelletseg train``'s options against what the trainer accepts."""

from __future__ import annotations

from cli.train import train
from training.recipe import _AUGMENT_WORDS
from training.sampling import AUGMENTS


def test_the_augment_choices_are_the_trainers_kinds():
    # cli/train.py writes the list out (the API process loads it and must not import
    # training); it must name exactly the kinds the trainer and the recipe know
    option = next(p for p in train.params if p.name == "augment")
    assert sorted(option.type.choices) == sorted(AUGMENTS) == sorted(_AUGMENT_WORDS)
    assert option.default in AUGMENTS
