"""The inference engine: a model package's network in torch (:mod:`worker.engine.network`; a
package of several members is a deep ensemble, :mod:`worker.engine.ensemble`),
devices and precision (:mod:`worker.engine.devices`), the runtimes that turn a batch of
normalised tiles (OpenVINO: also raw uint8 tiles) into logits (:mod:`worker.engine.runtimes`:
eager, torch.compile, OpenVINO, ONNX Runtime, TensorRT; ``PELLETSEG_RUNTIME``) and the
exported graph they load, a cached and checksummed artefact of a model package
(:mod:`worker.engine.exported`), the tile grid laid over an image
(:mod:`worker.engine.tiling`, pure numpy), bands read ahead in a thread
(:mod:`worker.engine.prefetch`), and :class:`Segmenter`, the one tiled-inference path that
serving, evaluation, training's validation and the benchmarks all run.

May import: ``core``, ``models``, ``imaging``, torch, segmentation-models-pytorch, onnxruntime
and openvino; never
``worker.stages``, ``storage``, ``queues``, ``api`` or ``training``. Names are loaded on first
use, so importing :mod:`worker.engine.tiling` alone does not import torch.
"""

from __future__ import annotations

import importlib

__all__ = ["RUNTIMES", "Segmenter", "StripStats", "TileGrid", "build_model", "exported_graph",
           "load_weights", "make_runtime", "pick_device", "write_package"]

_HOME = {
    "Segmenter": "worker.engine.segmenter",
    "StripStats": "worker.engine.segmenter",
    "TileGrid": "worker.engine.tiling",
    "build_model": "worker.engine.network",
    "load_weights": "worker.engine.network",
    "write_package": "worker.engine.network",
    "pick_device": "worker.engine.devices",
    "RUNTIMES": "worker.engine.runtimes",
    "make_runtime": "worker.engine.runtimes",
    "exported_graph": "worker.engine.exported",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'worker.engine' has no attribute {name!r}")
