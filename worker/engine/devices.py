"""Device plumbing for inference: device choice, CPU thread counts, CUDA precision, batch size
from free device memory, batch-norm folding, and labels that are still being computed on the
device.

Nothing here knows about tiles or strips; :mod:`worker.engine.segmenter` uses it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import structlog
import torch

log = structlog.get_logger(__name__)

#: Share of the free device memory (``torch.cuda.mem_get_info``) that an automatic batch may
#: use; the rest is left for the allocator's fragmentation, cuDNN workspaces and other
#: processes on the device.
AUTO_BATCH_MEMORY_FRACTION = 0.5
#: Largest automatic batch (tiles per forward pass): beyond this a GPU is saturated anyway.
AUTO_BATCH_MAX = 64
#: Autocast dtypes on CUDA by setting value (``fp32``: no autocast).
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}

_interop_lock = threading.Lock()
_interop_set = False


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU; otherwise ``torch.device(name)``.

    Raises:
        RuntimeError: ``name`` is not a valid torch device string.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_cpu_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (``torch.set_num_threads``) and one inter-op thread.

    With N worker processes on C cores each worker should get C / N intra-op threads (the
    local stack does this); inter-op parallelism is never used by an eager forward pass, so
    its pool is kept to one thread. ``threads <= 0`` leaves torch's defaults.
    """
    global _interop_set
    if threads <= 0:
        return
    torch.set_num_threads(threads)
    with _interop_lock:
        if not _interop_set:
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # inter-op work already started in this process: keep it
                pass
            _interop_set = True


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``: None (float32) on CPU, where
    outputs must stay identical to float32 inference; on CUDA ``bf16`` falls back to ``fp16``
    on GPUs without bfloat16 (before Ampere).

    Raises:
        ValueError: ``precision`` is not one of ``bf16``, ``fp16``, ``fp32``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if device.type != "cuda":
        return None
    dtype = PRECISIONS[precision]
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return torch.float16
    return dtype


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` into that convolution.

    In inference a batch norm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
    convolution with weights ``W * g / sqrt(v + eps)`` and bias ``(b - m) * g / sqrt(v + eps)
    + beta`` (g, beta, m, v: the norm's weight, bias, running mean and variance; Ioffe &
    Szegedy 2015, eq. in Alg. 2; the same folding TensorRT and ONNX Runtime do). The result
    differs from the original by float rounding only (~1e-5 in logits); it removes one
    memory-bound pass over every activation (1.3x faster for the bundled UNet-MobileNetV2 on
    CPU, docs/performance.md). The graph comes from ``torch.fx`` symbolic tracing (PyTorch's
    ``torch.fx.experimental.optimization.fuse``); a model fx cannot trace (data-dependent
    control flow, e.g. smp's FPN) is returned unchanged, with an ``inference.fold_skipped``
    log line.

    Args:
        model: A module in eval mode.

    Returns:
        A new module (the input is left as it is), or ``model`` itself when it cannot be traced.

    Raises:
        ValueError: ``model`` is in training mode (its batch statistics are not fixed).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (model.eval())")
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)
    except Exception as e:
        log.info("inference.fold_skipped", model=type(model).__name__,
                 error=f"{type(e).__name__}: {str(e)[:200]}")
        return model


def batch_from_memory(free_bytes: int, per_tile_bytes: int) -> int:
    """Tiles per forward pass that fit in ``AUTO_BATCH_MEMORY_FRACTION`` of ``free_bytes``
    when one tile needs ``per_tile_bytes``: between 1 and :data:`AUTO_BATCH_MAX`."""
    if per_tile_bytes <= 0:
        return 1
    fits = int(free_bytes * AUTO_BATCH_MEMORY_FRACTION // per_tile_bytes)
    return max(1, min(AUTO_BATCH_MAX, fits))


def measure_tile_bytes(device: torch.device, run_one) -> int:
    """Peak device memory (bytes) that ``run_one()`` (one tile through the model) allocates
    beyond what is already allocated.

    Raises:
        torch.cuda.OutOfMemoryError: not even one tile fits.
    """
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run_one()
    torch.cuda.synchronize(device)
    return max(1, torch.cuda.max_memory_allocated(device) - base)


@dataclass
class PendingLabels:
    """Labels of a batch that the device may still be computing.

    On CUDA ``host`` is a pinned buffer filled by a non-blocking copy, ``done`` the event
    recorded after it and ``started`` the event recorded before the batch's first copy (both
    timing events); on CPU ``host`` is already final and ``seconds`` the forward pass's time.
    """

    host: torch.Tensor
    done: torch.cuda.Event | None = None
    keep: torch.Tensor | None = None  # the batch's input buffer, alive until ``done``
    started: torch.cuda.Event | None = None
    seconds: float = 0.0
    #: (N, T, T) uint8 confidence (host; pinned on CUDA), when it was asked for
    confidence: torch.Tensor | None = None

    def result(self) -> np.ndarray:
        """(N, T, T) uint8 labels, waiting for the device if needed."""
        if self.done is not None:
            self.done.synchronize()
        return self.host.numpy()

    def confidence_result(self) -> np.ndarray | None:
        """(N, T, T) uint8 confidence (see :meth:`worker.engine.segmenter.Segmenter.decide`),
        or None when the batch was launched without it; waits for the device if needed."""
        if self.confidence is None:
            return None
        if self.done is not None:
            self.done.synchronize()
        return self.confidence.numpy()

    def device_seconds(self) -> float:
        """Time the device spent on this batch (s): on CUDA between the two events (copy in,
        forward pass, argmax, copy out; the start event fires when the device reaches it,
        so waiting behind earlier work is not counted); on CPU the forward pass's wall time.
        Call after :meth:`result`."""
        if self.started is not None and self.done is not None:
            return self.started.elapsed_time(self.done) / 1000.0
        return self.seconds
