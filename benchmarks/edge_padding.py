"""What an image's edge costs a model: val mIoU of whole-image passes with the image padded by
P px of numpy mode M (reflect, as the tiles' halo; constant = black; ...), for one package or
the mean softmax of several (a multi-scale average when their input scales differ).

Each image is labelled in one forward pass (``Segmenter.probabilities_single_pass``: the image
padded by P px, and right and below to a side the network takes, in the same mode), the
labels cropped back to the image, and the confusion matrix summed over the split (mIoU as
``pelletseg evaluate``). This is a measurement of the model's sensitivity to what surrounds
an image, not the served path: ``pelletseg evaluate`` gives that (docs/models.md, run 34).

Usage (from the repository root, ``../shared`` beside it)::

    python -m benchmarks.edge_padding datasets/lumenstone-s2/dataset.yaml --split val \\
        --pad 64 --pad 512 --mode reflect --mode constant PACKAGE [PACKAGE ...]
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np


@click.command()
@click.argument("dataset_yaml", type=click.Path(exists=True, dir_okay=False))
@click.argument("packages", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--split", default="val", show_default=True)
@click.option("--pad", "pads", type=int, multiple=True, default=(64, 512), show_default=True,
              help="Padding (image px) on every side; repeat for several.")
@click.option("--mode", "modes", multiple=True, default=("reflect",), show_default=True,
              help="numpy.pad mode (reflect, symmetric, edge, wrap, constant); repeat.")
@click.option("--threads", type=int, default=2, show_default=True)
def main(dataset_yaml, packages, split, pads, modes, threads):
    """Print one JSON line per (pad, mode): each package's mIoU and per-class IoU, and their
    mean softmax's when more than one package is given."""
    import torch

    from training.confusion import confusion_matrix, iou_per_class, miou
    from training.datasets import load_dataset_spec, load_split
    from training.evaluation import class_mapping
    from worker.engine.segmenter import Segmenter

    torch.set_num_threads(threads)
    segs = [Segmenter(p, device="cpu", threads=threads) for p in packages]
    spec = load_dataset_spec(dataset_yaml)
    lut = class_mapping(segs[0].package, spec)
    data = [(img, lut[mask]) for img, mask in load_split(spec, spec.split_stems()[split])]
    n = segs[0].package.n_classes
    names = [c.name for c in segs[0].package.classes]
    keys = [Path(p).name for p in packages] + (["mean"] if len(segs) > 1 else [])
    for mode in modes:
        for pad in pads:
            conf = {k: np.zeros((n, n), np.int64) for k in keys}
            for img, mask in data:
                probs = [s.probabilities_single_pass(img, pad, mode) for s in segs]
                if len(segs) > 1:
                    probs.append(sum(probs) / len(segs))
                for k, p in zip(keys, probs, strict=True):
                    conf[k] += confusion_matrix(p.argmax(0).astype(np.uint8), mask, n)
            click.echo(json.dumps({"pad_px": pad, "mode": mode, "split": split, **{
                k: {"miou": round(float(miou(c)), 4),
                    "iou": dict(zip(names, np.round(iou_per_class(c), 3).tolist(),
                                    strict=True))}
                for k, c in conf.items()}}))


if __name__ == "__main__":
    main()
