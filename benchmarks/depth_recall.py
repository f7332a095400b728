"""Recall by depth inside the labelled regions: does a model label the inside of a phase's large
regions as well as their edge, and did training ever show it that deep?

For the training split it prints, per class, the share of its labelled px in each depth bin
(depth: distance in px to the nearest px of another label, :func:`training.confusion.
label_depth`, binned by :func:`training.confusion.depth_confusion`); for each package and the
evaluated split, per class and bin, the labelled px, the recall and the class that takes most
of the misses, from labels made through the served path
(:func:`training.evaluation.evaluate_package`: the package's tiles, halo, edge padding and
test-time augmentation). A class whose evaluated px lie deeper than any training px, and whose
recall falls with depth, is one the model learnt as grains only (LumenStone S2's magnetite:
docs/models.md, run 41).

Usage (from the repository root, ``../shared`` beside it)::

    python -m benchmarks.depth_recall datasets/lumenstone-s2/dataset.yaml --split val \\
        --depth 8 --depth 32 --depth 64 --depth 128 PACKAGE [PACKAGE ...]
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np


def _bin_names(depths: tuple[int, ...]) -> list[str]:
    lo = (0, *depths)
    return [f"({a}, {b}]" for a, b in zip(lo, depths, strict=False)] + [f"> {depths[-1]}"]


@click.command()
@click.argument("dataset_yaml", type=click.Path(exists=True, dir_okay=False))
@click.argument("packages", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--split", default="val", show_default=True, help="The split evaluated.")
@click.option("--train-split", default="train", show_default=True,
              help="The split whose depths are shown beside it (empty: none).")
@click.option("--depth", "depths", type=int, multiple=True, default=(8, 32, 64, 128),
              show_default=True, help="Depth bin bounds (image px); repeat for several.")
@click.option("--threads", type=int, default=2, show_default=True)
def main(dataset_yaml, packages, split, train_split, depths, threads):
    """Print one JSON line for the training split's depths, then one per package."""
    from models.package import read_package
    from training.confusion import depth_confusion
    from training.datasets import load_dataset_spec, load_split
    from training.evaluation import class_mapping, evaluate_package

    depths = tuple(sorted(depths))
    spec = load_dataset_spec(dataset_yaml)
    package = read_package(packages[0])
    lut = class_mapping(package, spec)
    names = [c.name for c in package.classes]
    n, bins = len(names), _bin_names(depths)
    stems = spec.split_stems()
    if not stems.get(split):
        raise click.UsageError(f"{dataset_yaml}: split {split!r} is missing or empty; splits: "
                               f"{sorted(k for k, v in stems.items() if v)}")
    if train_split and stems.get(train_split):
        # a mask as its own prediction: each bin's rows count the class's px at that depth
        counts = sum(depth_confusion(lut[mask], lut[mask], n, depths).sum(2)
                     for _, mask in load_split(spec, stems[train_split]))
        click.echo(json.dumps({"split": train_split, "labelled_px_share_by_depth": {
            nm: dict(zip(bins, np.round(counts[:, c] / max(1, counts[:, c].sum()), 4).tolist(),
                         strict=True))
            for c, nm in enumerate(names)}}))
    data = [(img, lut[mask]) for img, mask in load_split(spec, stems[split])]
    for pkg in packages:
        labels: list[np.ndarray] = []
        evaluate_package(pkg, data, threads=threads, labels_out=labels)
        conf = sum(depth_confusion(lab, mask, n, depths)
                   for lab, (_, mask) in zip(labels, data, strict=True))
        out = {}
        for c, nm in enumerate(names):
            rows = {}
            for b, bn in enumerate(bins):
                row = conf[b, c]
                if row.sum() == 0:
                    continue
                misses = row.copy()
                misses[c] = 0
                rows[bn] = {"px": int(row.sum()), "recall": round(float(row[c] / row.sum()), 4),
                            "most_missed_to": names[int(misses.argmax())] if misses.any()
                            else None}
            out[nm] = rows
        click.echo(json.dumps({"package": Path(pkg).name, "split": split,
                               "recall_by_depth": out}))


if __name__ == "__main__":
    main()
