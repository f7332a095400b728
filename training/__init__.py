"""Training and evaluation of segmentation models on a lab's labelled micrographs: the
dataset description and importers (:mod:`training.datasets`, :mod:`training.importers`), the
default recipe fitted to a time budget and a device (:mod:`training.recipe`), class-balanced
patches and their augmentation (:mod:`training.sampling`), losses (:mod:`training.losses`),
CPU precision (:mod:`training.precision`), the weight average
(:mod:`training.averaging`), checkpoints without pickle (:mod:`training.checkpoints`), the
training loop that writes a model package (:mod:`training.trainer`), and evaluation through
the production tiled path with confusion matrices, calibration and reports
(:mod:`training.evaluation`, :mod:`training.confusion`, :mod:`training.calibration`,
:mod:`training.reports`). Submodules are imported where used: importing this package loads
neither torch nor the training loop (``pelletseg serve`` and the API never need them).

May import: ``core``, ``models``, ``worker.engine`` (the network and the tiled inference
that serving uses), torch, segmentation-models-pytorch, torchvision, numpy, scipy, Pillow,
pydantic, yaml, rich and matplotlib; never ``api``, ``submission``, ``queues`` or the queue
stages and tasks (``worker.stages``, ``worker.tasks``).
"""

__all__ = ["averaging", "calibration", "checkpoints", "confusion", "datasets", "errors",
           "evaluation", "importers", "losses", "precision", "recipe", "reports", "sampling",
           "trainer"]
