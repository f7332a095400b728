"""Tiled inference of a model package on image strips.

The model runs under ``torch.inference_mode`` on batches of T x T tiles, in channels_last
memory format; the argmax is taken on the device and only uint8 labels come back to the host.

A strip is processed as a pipeline (:meth:`Segmenter.segment_rows`):

1. a reader thread (:class:`worker.engine.prefetch.Prefetcher`) reads and pads the input band of
   tile row k+1 while the device works on tile row k;
2. tiles are copied into a (pinned, on CUDA) host batch, sent with a non-blocking copy,
   normalised, run under bf16/fp16 autocast (CUDA) and reduced to uint8 labels by an argmax
   on the device; the labels come back by a non-blocking copy into pinned memory;
3. on CUDA batch k+1 is launched before the labels of batch k are placed, so the host's
   work on k overlaps the device's work on k+1.

On CPU every operation is the one of the simple path (:meth:`Segmenter.segment_strip_simple`)
in the same order, so labels are byte-identical to it (a test checks this).

With ``with_confidence`` every method also returns the per-pixel *confidence* (README,
"Glossary"): ``round(255 * max softmax probability)`` as uint8, computed per batch of tiles
by :meth:`Segmenter.decide` next to the argmax (never for a whole strip in float) and cropped
to the same tile cores as the labels; the labels are the same with or without it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from core.geometry import TILE_MULTIPLE, GeometryError, TileGeometry, model_tile_size
from models.package import TTA_KINDS, ModelPackage, read_package
from worker.engine.devices import (
    PendingLabels,
    autocast_dtype,
    batch_from_memory,
    fold_batchnorm,
    measure_tile_bytes,
    pick_device,
    set_cpu_threads,
)
from worker.engine.network import (
    build_model,
    load_weights,
    to_image_scale,
    to_model_scale,
)
from worker.engine.prefetch import Prefetcher, RowsFn, iter_bands, region_rows
from worker.engine.runtimes import Runtime, make_runtime
from worker.engine.tiling import (
    TileGrid,
    band_tile,
    check_region,
    cut_tiles,
    iter_batches,
    place_tiles,
    strip_bands,
)

__all__ = ["FLIPS", "Segmenter", "StripStats", "flip_mean", "network_side", "pick_device",
           "serving_grid"]

log = structlog.get_logger(__name__)

#: The flips of ``tta="flips"``: dims of an (N, C, H, W) tensor to flip, () the tile as is.
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def flip_mean(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              layout: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> torch.Tensor:
    """Flip test-time augmentation: the mean of ``run``'s logits of ``x`` and of its
    horizontal, vertical and double flips (:data:`FLIPS`), each flipped back (Ronneberger et
    al., "U-Net", 2015; the flips of ``ttach``): four forward passes.

    Args:
        run: (N, 3, h, w) model input -> (N, C, h, w) logits (a model or a runtime).
        x: (N, 3, h, w) float model input.
        layout: Applied to each flipped input (a memory format the runtime takes).

    Returns:
        (N, C, h, w) float32 mean logits.
    """
    total = None
    for dims in FLIPS:
        out = run(layout(x.flip(dims)) if dims else x).float()
        out = out.flip(dims) if dims else out
        # a runtime may hand back a buffer it reuses: keep a copy of the first
        total = out.clone() if total is None else total.add_(out)
    return total.div_(len(FLIPS))


def network_side(n: int, input_scale: float) -> int:
    """The smallest side >= ``n`` px a network at ``input_scale`` takes: a multiple of 32 px
    whose model side (``side * input_scale``) is a multiple of 32 too (128 px at 0.25, 256 px
    at 0.125; :func:`core.geometry.model_tile_size`)."""
    n += (-n) % TILE_MULTIPLE
    while True:
        try:
            model_tile_size(n, input_scale)
            return n
        except GeometryError:
            n += TILE_MULTIPLE


def serving_grid(width: int, height: int, geometry: TileGeometry, input_scale: float, *,
                 edge_pad: int | None = None, rows_per_task: int = 1,
                 fit_edges: bool = True) -> TileGrid:
    """The tile grid a package at ``input_scale`` labels a ``height`` x ``width`` px image
    with: ``geometry`` (image px), ``edge_pad`` (px, clamped to the halo; None: the halo),
    tile sides on the unit the scale takes (:func:`network_side`; the tile size itself where
    the scale's valid sides are not one unit's multiples) and fitted edge tiles
    (:class:`~worker.engine.tiling.TileGrid`; False: a job of spec version < 4). One
    definition for serving (:meth:`Segmenter.grid`) and for the trainer's estimate of its
    final evaluation.

    Raises:
        GeometryError: an empty image or ``rows_per_task`` < 1.
    """
    if edge_pad is not None:
        edge_pad = min(edge_pad, geometry.halo)
    unit = network_side(1, input_scale)
    if geometry.tile_size % unit or network_side(2 * unit, input_scale) != 2 * unit:
        unit = geometry.tile_size
    return TileGrid(width, height, geometry, rows_per_task, edge_pad=edge_pad, unit=unit,
                    fit_edges=fit_edges)


@dataclass
class StripStats:
    """What one strip cost (for logs and benchmarks).

    Attributes:
        tiles: T x T tiles run through the model.
        batch_size: Tiles per forward pass.
        seconds: Wall time of the whole strip (s).
        read_s: Time the reader spent reading and padding bands (s).
        read_wait_s: Time inference waited for the reader: the read time that did *not*
            overlap with inference (s).
        device_s: Time the device spent on the strip's batches (s): the model's share of
            ``seconds`` is ``device_s / seconds`` (see :meth:`PendingLabels.device_seconds`).
    """

    tiles: int
    batch_size: int
    seconds: float = 0.0
    read_s: float = 0.0
    read_wait_s: float = 0.0
    device_s: float = 0.0


#: Rows of logits :meth:`Segmenter.decide` reduces at a time on the CPU (a (C, 256, T) float32
#: block of a 1728 px tile of 3 classes is 5 MiB).
DECIDE_ROWS = 256


class Segmenter:
    """A loaded model package ready to label tiles.

    Safe to share between threads (several rows in flight in one worker): forward passes are
    serialised by a lock, so device memory holds one batch's activations at a time.

    Args:
        package_dir: Folder with ``model.json`` and ``weights.safetensors``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        channels_last: Use the channels_last memory format (1.3-1.7x faster on CPU here).
        threads: torch intra-op threads (inter-op: 1); 0 keeps torch's defaults.
        batch_size: Tiles per forward pass; 0 picks 1 on CPU (fastest here) and, on CUDA,
            the most tiles that fit in half the free device memory (measured with one tile,
            per tile size, capped at 64).
        precision: Autocast on CUDA: ``bf16`` (default; ``fp16`` on GPUs without bfloat16),
            ``fp16`` or ``fp32``. On CPU the OpenVINO runtime computes in bfloat16 where the
            package allows it (``ModelPackage.cpu_precision``) and the CPU has bfloat16 units,
            unless this is ``fp32``; everything else on CPU computes in float32.
        cpu_precision: OpenVINO's precision forced (``f32`` or ``bf16``, for measurements;
            :func:`worker.engine.runtimes.openvino_precision`); None: as above.
        cpu_f32_convs: In bfloat16, how many of the graph's leading convolutions keep float32
            (:func:`worker.engine.runtimes.float32_prefix`; for measurements); None: the
            package's ``cpu_f32_convs``.
        compile: Run the model through ``torch.compile`` (falls back to eager, with a
            warning, if compilation fails on the first batch); the same as
            ``runtime="compile"``.
        fold_bn: Fold batch norms into the convolutions before them
            (:func:`worker.engine.devices.fold_batchnorm`; same labels up to float rounding).
        runtime: How the model runs (:mod:`worker.engine.runtimes`: ``eager``, ``compile``,
            ``openvino``, ``onnxruntime``, ``tensorrt`` or ``auto``); tiling, argmax and
            placement are the same for all.
        cache_dir: Folder of exported graphs for the runtimes that need one (default
            ``PELLETSEG_EXPORT_CACHE_DIR``, by default ``PELLETSEG_CACHE_DIR/exported``).
        tta: Test-time augmentation (``none`` or ``flips``, see :meth:`forward`); None: the
            package's (``ModelPackage.tta``).
        edge_pad: Mirrored px a tile may show past the image's edge (:mod:`worker.engine.tiling`,
            at most the halo); None: the package's (``ModelPackage.edge_pad``).

    Raises:
        ModelPackageError: the package is invalid or its weights fail the sha256 check.
        ValueError: unknown ``precision`` or ``runtime``, or a negative ``edge_pad``.
        RuntimeUnavailable: the runtime named cannot run here (not installed, wrong device).
        ExportError: the runtime's graph could not be exported.
    """

    def __init__(
        self,
        package_dir: str | Path,
        *,
        device: str = "auto",
        channels_last: bool = True,
        threads: int = 0,
        batch_size: int = 0,
        precision: str = "bf16",
        compile: bool = False,
        fold_bn: bool = True,
        runtime: str = "eager",
        cache_dir: str | Path | None = None,
        tta: str | None = None,
        cpu_precision: str | None = None,
        edge_pad: int | None = None,
        cpu_f32_convs: int | None = None,
    ):
        package = read_package(package_dir)

        def model() -> torch.nn.Module:  # built only where it is used (see :attr:`model`)
            net = build_model(package)
            load_weights(net, package_dir)
            return net

        self._setup(package, model, device=device, channels_last=channels_last, threads=threads,
                    batch_size=batch_size, precision=precision, compile=compile, fold_bn=fold_bn,
                    runtime=runtime, cache_dir=cache_dir, tta=tta, cpu_precision=cpu_precision,
                    edge_pad=edge_pad, cpu_f32_convs=cpu_f32_convs)

    @classmethod
    def from_model(cls, package: ModelPackage, model: torch.nn.Module, *, device: str = "cpu",
                   threads: int = 0, batch_size: int = 0) -> Segmenter:
        """A segmenter over a model already in memory (training validates its model through
        the same tiled path as production, without writing a package first).

        Args:
            package: What the model is (classes, normalisation, geometry); its
                ``weights_sha256`` is not checked.
            model: The network; put in eval mode, channels_last, on ``device`` (in place).

        Raises:
            ValueError: unknown device.
        """
        self = cls.__new__(cls)
        self._setup(package, model, device=device, channels_last=True, threads=threads,
                    batch_size=batch_size, precision="fp32", compile=False, fold_bn=False)
        return self

    def _setup(self, package: ModelPackage,
               model: torch.nn.Module | Callable[[], torch.nn.Module], *, device: str,
               channels_last: bool, threads: int, batch_size: int, precision: str,
               compile: bool, fold_bn: bool, runtime: str = "eager",
               cache_dir: str | Path | None = None, tta: str | None = None,
               cpu_precision: str | None = None, edge_pad: int | None = None,
               cpu_f32_convs: int | None = None) -> None:
        set_cpu_threads(threads)
        tta = package.tta if tta is None else tta
        if tta not in TTA_KINDS:
            raise ValueError(f"tta must be one of {TTA_KINDS}, got {tta!r}")
        if edge_pad is not None and edge_pad < 0:
            raise ValueError(f"edge_pad must be >= 0 px, got {edge_pad}")
        self.tta = tta
        self.edge_pad = package.edge_pad if edge_pad is None else edge_pad
        self.package = package
        self.device = pick_device(device)
        self.channels_last = channels_last
        self._amp = autocast_dtype(self.device, precision)
        self._batch_size = batch_size
        self._auto_batch: dict[int, int] = {}
        self._lock = threading.Lock()  # one forward pass at a time
        self._probe_lock = threading.Lock()

        def prepared(net: torch.nn.Module) -> torch.nn.Module:
            net.eval()
            if fold_bn:
                net = fold_batchnorm(net)
            net.to(self.device)
            return net.to(memory_format=torch.channels_last) if channels_last else net

        self._model_lock = threading.Lock()
        if isinstance(model, torch.nn.Module):
            self._model: torch.nn.Module | None = prepared(model)
        else:
            self._model = None
            self._build_model = lambda: prepared(model())
        # compile=True (PELLETSEG_TORCH_COMPILE) keeps its meaning unless a runtime is named;
        # a runtime that finds its exported graph in the cache never asks for the model
        self.runtime: Runtime = make_runtime(
            "compile" if compile and runtime in ("eager", "auto") else runtime,
            lambda: self.model, package,
            self.device, threads=threads, cache_dir=cache_dir, folded=fold_bn,
            precision=precision, cpu_precision=cpu_precision, cpu_f32_convs=cpu_f32_convs)
        log.info("inference.runtime", **self.inference | {"device": str(self.device)},
                 model=package.name, version=package.version)
        # runtimes fed host arrays take NCHW tiles: channels_last would be undone at once
        self.channels_last = channels_last and self.runtime.torch_module
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed tile shapes: pick the fastest convs
        norm = self.package.normalisation
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(norm.mean, device=self.device).view(shape) * 255.0
        self._std = torch.tensor(norm.std, device=self.device).view(shape) * 255.0

    @property
    def model(self) -> torch.nn.Module:
        """The package's network (eval mode, batch norms folded where asked, on the device),
        built and loaded from ``weights.safetensors`` on first use: the eager and compile
        runtimes use it at once; a runtime over an exported graph only where the graph must be
        exported (not found in the cache, or failing its checksum), so a worker whose graph is
        cached never imports segmentation_models_pytorch (1.3 s and 200 MiB of a worker's cold
        start, docs/performance.md).

        Raises:
            ModelPackageError: the weights do not fit the architecture.
        """
        with self._model_lock:
            if self._model is None:
                self._model = self._build_model()
            return self._model

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype of forward passes (None: float32)."""
        return self._amp

    @property
    def inference(self) -> dict[str, str | int]:
        """How this segmenter computes labels, recorded with every row it computes
        (``rows.inference``) and summed up in ``fractions.json``: ``{"runtime": str,
        "device": "cpu" | "cuda", "precision": "f32" | "bf16" | "f16", "f32_convs": int,
        "tta": str}``. ``precision`` is the runtime's on CPU (OpenVINO serves a package in
        bfloat16 only on CPUs with bfloat16 units, :func:`worker.engine.runtimes.
        openvino_precision`) and the autocast dtype's on CUDA for torch-module runtimes;
        ``f32_convs``: leading convolutions kept float32 in bfloat16 (0 otherwise)."""
        precision = self.runtime.precision
        if self.device.type == "cuda" and self.runtime.torch_module and self._amp is not None:
            precision = "bf16" if self._amp is torch.bfloat16 else "f16"
        return {"runtime": self.runtime.name, "device": self.device.type,
                "precision": precision, "f32_convs": int(self.runtime.f32_convs),
                "tta": self.tta}

    # ------------------------------------------------------------------ batch size
    @property
    def batch_size(self) -> int:
        """Tiles per forward pass at the package's own tile size (see :meth:`batch_for`)."""
        return self.batch_for(self.package.tile_size)

    def batch_for(self, tile_size: int) -> int:
        """Tiles per forward pass for T = ``tile_size``: the configured batch size, else 1 on
        CPU, else (CUDA) measured once per tile size from free device memory."""
        if self._batch_size > 0:
            return self._batch_size
        if self.device.type != "cuda":
            return 1
        with self._probe_lock:  # rows in flight: probe once per tile size
            if tile_size not in self._auto_batch:
                self._auto_batch[tile_size] = self._probe_batch(tile_size)
                log.info("inference.auto_batch", tile_size=tile_size,
                         batch_size=self._auto_batch[tile_size], device=str(self.device))
            return self._auto_batch[tile_size]

    def _probe_batch(self, tile_size: int) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        # memory torch has cached but not allocated is free for our batches too
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        one = np.zeros((1, tile_size, tile_size, 3), dtype=np.uint8)
        try:
            # with the confidence: its float32 softmax is the largest extra buffer of a batch
            per_tile = measure_tile_bytes(self.device,
                                          lambda: self.predict_tiles_with_confidence(one))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return 1
        return batch_from_memory(free, per_tile)

    # ------------------------------------------------------------------ device stage
    @staticmethod
    def decide(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and confidence of a batch of logits, on the logits' device.

        The confidence is the maximum softmax probability (the baseline of Hendrycks and
        Gimpel, "A baseline for detecting misclassified and out-of-distribution examples in
        neural networks", ICLR 2017), computed in float32 whatever the logits' dtype and
        stored as ``round(255 * p)`` (round half to even): 255 = certain, ``round(255 / C)``
        the least possible with C classes; a value < 128 means p < 0.5.

        Args:
            logits: (N, C, H, W) float logits of any float dtype.

        Returns:
            ((N, H, W) uint8 argmax labels, identical to ``logits.argmax(1)`` (:meth:`labels_of`);
            (N, H, W) uint8 confidence).

        On the CPU the rows of the logits are taken :data:`DECIDE_ROWS` at a time (each
        pixel's result depends on its own C logits only, so the results are the same): the
        softmax's output is then still in the cache when its maximum is taken, 13 % less time
        for 3 classes at 1728 px and 25 % for 9 classes at 2048 px (docs/performance.md).
        """
        n, _, h, w = logits.shape
        if logits.device.type == "cuda" or h <= DECIDE_ROWS:
            return Segmenter._decide(logits)
        return Segmenter._decide_by_rows(lambda r: logits[:, :, r:r + DECIDE_ROWS], (n, h, w),
                                         logits.device, with_confidence=True)

    @staticmethod
    def _decide_by_rows(block_at: Callable[[int], torch.Tensor], shape: tuple[int, int, int],
                        device: torch.device, with_confidence: bool
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels (and confidence) of (N, H, W) = ``shape`` px from their logits
        :data:`DECIDE_ROWS` rows at a time: ``block_at(r)`` gives the (N, C, <= DECIDE_ROWS, W)
        logits of rows r, r + 1, ...; each block is decided while it is in the cache."""
        labels = torch.empty(shape, dtype=torch.uint8, device=device)
        confidence = (torch.empty(shape, dtype=torch.uint8, device=device) if with_confidence
                      else None)
        for r in range(0, shape[1], DECIDE_ROWS):
            block = block_at(r)
            rows = slice(r, r + block.shape[2])
            if with_confidence:
                labels[:, rows], confidence[:, rows] = Segmenter._decide(block)
            else:
                labels[:, rows] = Segmenter.labels_of(block)
        return labels, confidence

    @staticmethod
    def _decide(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decide` on one block of logits."""
        labels = Segmenter.labels_of(logits)
        top = torch.softmax(logits.float(), dim=1).amax(dim=1)
        confidence = top.mul_(255.0).round_().to(torch.uint8)
        return labels, confidence

    @staticmethod
    def labels_of(logits: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) logits -> (N, H, W) uint8 labels, identical to ``logits.argmax(1)``
        (the first class on ties) through ``max(dim=1)``, which PyTorch's CPU kernels reduce
        over the class dimension of NCHW logits far faster than ``argmax`` (0.015 s against
        0.25-0.33 s for a 1728 px tile of 3 classes on one thread; docs/performance.md)."""
        return logits.max(dim=1).indices.to(torch.uint8)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 tiles -> (N, 3, H, W) float32 normalised model input (channels_last
        if enabled), on the tensor's device."""
        x = x.permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def logits(self, tiles: torch.Tensor) -> torch.Tensor:
        """(N, T, T, 3) uint8 tiles on :attr:`device` -> (N, C, T, T) logits. Every path from
        tiles to labels goes through here (rows, the model-only limit, the single pass).

        At input scale 1: :meth:`normalise` then :meth:`forward`, or, where the runtime
        normalises inside its own graph (:attr:`Runtime.uint8_normalisation`: OpenVINO) and
        there are no test-time flips, the tiles straight into it
        (:meth:`worker.engine.runtimes.Runtime.from_uint8`). At a reduced input scale s the
        raw tile is reduced first (area averaging of the 0-255 values, exact in float32: block
        sums of integers) and the s² as many model pixels normalised, then the model and the
        bilinear interpolation back as in :meth:`forward`; the logits differ from
        ``forward(normalise(tiles))`` by float rounding only (~1e-6), at a third of the
        pre-processing's cost (docs/performance.md, 2026-12-05).

        Raises:
            ValueError: ``T * input_scale`` is not a multiple of 32 model px.
        """
        scale = self.package.input_scale
        if scale == 1:
            if self.runtime.uint8_normalisation is not None and self.tta == "none":
                return self.runtime.from_uint8(tiles)
            return self.forward(self.normalise(tiles))
        return to_image_scale(self._model_logits(tiles), tuple(tiles.shape[1:3]))

    def _model_logits(self, tiles: torch.Tensor) -> torch.Tensor:
        """(N, T, T, 3) uint8 tiles -> (N, C, sT, sT) logits at the model's scale s < 1: the
        raw tile reduced, then normalised, then the model (see :meth:`logits`).

        Raises:
            ValueError: ``T * input_scale`` is not a multiple of 32 model px.
        """
        self._check_model_side(tuple(tiles.shape[1:3]))
        small = to_model_scale(tiles.permute(0, 3, 1, 2).float(), self.package.input_scale)
        return self._forward_at_model_scale(self._layout((small - self._mean) / self._std))

    def labels_and_confidence(self, tiles: torch.Tensor, with_confidence: bool = True
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, T, T, 3) uint8 tiles -> ((N, T, T) uint8 labels, (N, T, T) uint8 confidence or
        None): :meth:`decide` (or :meth:`labels_of`) of :meth:`logits`, on the tiles' device.

        At an input scale 1/f (f = 2, 4, 8, ...) on the CPU the logits are interpolated back
        and decided :data:`DECIDE_ROWS` image rows at a time, each block from its own model
        rows plus one on either side (``scale_factor=f``: the same source positions and
        weights as the whole tile's interpolation, so the same values), instead of writing the
        whole (N, C, T, T) float logits and reading them back: the same labels and confidence,
        0.126 -> 0.085 s for a 2048 px tile of 3 classes at 0.125 (docs/performance.md).

        Raises:
            ValueError: ``T * input_scale`` is not a multiple of 32 model px.
        """
        scale = self.package.input_scale
        f = round(1 / scale)
        if scale == 1 or self.device.type == "cuda" or f * scale != 1 or DECIDE_ROWS % f:
            logits = self.logits(tiles)
            if with_confidence:
                return self.decide(logits)
            return self.labels_of(logits), None
        small = self._model_logits(tiles)
        h = small.shape[2]

        def interpolated(r0: int) -> torch.Tensor:
            s0 = r0 // f
            lo, hi = max(s0 - 1, 0), min(s0 + DECIDE_ROWS // f + 1, h)
            part = F.interpolate(small[:, :, lo:hi].float(), scale_factor=(f, f),
                                 mode="bilinear", align_corners=False,
                                 recompute_scale_factor=False)
            return part[:, :, (s0 - lo) * f:(s0 - lo) * f + DECIDE_ROWS]

        return self._decide_by_rows(interpolated, (tiles.shape[0], *tiles.shape[1:3]),
                                    small.device, with_confidence)

    def _check_model_side(self, size: tuple[int, ...]) -> None:
        """Raise ValueError unless each side in ``size`` (px) is a whole number of model px
        at the package's input scale, a multiple of 32 (:func:`core.geometry.model_tile_size`)."""
        try:
            for side in set(size):
                model_tile_size(side, self.package.input_scale)
        except GeometryError as e:
            raise ValueError(f"model {self.package.name} {self.package.version}: {e}") from e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, T) normalised tiles -> (N, C, T, T) logits through :attr:`runtime`.

        With the package's ``input_scale`` s < 1 the tiles are reduced to (N, 3, sT, sT) by
        area averaging, and the logits interpolated back to (T, T)
        (:func:`worker.engine.network.to_model_scale`, :func:`~worker.engine.network.to_image_scale`).
        With :attr:`tta` ``flips``, the mean of the logits of the tiles and of their
        horizontal, vertical and double flips, each flipped back (:func:`flip_mean`): four
        forward passes, the same labels wherever the model is flip-equivariant.

        Raises:
            ValueError: ``T * input_scale`` is not a multiple of 32 model px
                (:func:`core.geometry.model_tile_size`).
        """
        scale = self.package.input_scale
        if scale == 1:
            return self._forward_at_model_scale(x)
        size = tuple(x.shape[-2:])
        self._check_model_side(size)
        logits = self._forward_at_model_scale(self._layout(to_model_scale(x, scale)))
        return to_image_scale(logits, size)

    def _forward_at_model_scale(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, t, t) model input -> (N, C, t, t) logits through :attr:`runtime`, averaged
        over the flips with :attr:`tta` ``flips`` (see :meth:`forward`)."""
        if self.tta == "none":
            return self.runtime(x)
        return flip_mean(self.runtime, x, self._layout)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format the runtime takes (channels_last or contiguous)."""
        return x.contiguous(memory_format=torch.channels_last if self.channels_last
                            else torch.contiguous_format)

    @torch.inference_mode()
    def _launch(self, tiles: torch.Tensor, with_confidence: bool = False) -> PendingLabels:
        """Start labelling (N, T, T, 3) uint8 host tiles (pinned on CUDA); returns at once on
        CUDA (the device works on), after the forward pass on CPU. ``with_confidence`` also
        brings back the batch's uint8 confidence (:meth:`decide`)."""
        with self._lock:
            if self.device.type != "cuda":
                t0 = time.perf_counter()
                labels, conf = self.labels_and_confidence(tiles, with_confidence)
                return PendingLabels(labels.cpu(), seconds=time.perf_counter() - t0,
                                     confidence=None if conf is None else conf.cpu())
            started = torch.cuda.Event(enable_timing=True)
            started.record()
            x = tiles.to(self.device, non_blocking=True)
            with torch.autocast("cuda", dtype=self._amp, enabled=self._amp is not None):
                logits = self.logits(x)
            conf_host = None
            if with_confidence:
                labels, conf = self.decide(logits)
                conf_host = torch.empty(conf.shape, dtype=torch.uint8, pin_memory=True)
                conf_host.copy_(conf, non_blocking=True)
            else:
                labels = self.labels_of(logits)
            host = torch.empty(labels.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(labels, non_blocking=True)
            done = torch.cuda.Event(enable_timing=True)
            done.record()
        # keep the input buffer alive until the labels are back (its copy is done by then)
        return PendingLabels(host, done, keep=tiles, started=started, confidence=conf_host)

    @torch.inference_mode()
    def labels_on_device(self, tiles: torch.Tensor) -> torch.Tensor:
        """The model-only work on tiles already in device memory: normalise, forward pass
        (autocast on CUDA), argmax; nothing crosses to the host (the benchmarks' limit).

        Args:
            tiles: (N, T, T, 3) uint8 on :attr:`device`.

        Returns:
            (N, T, T) uint8 labels on :attr:`device` (CUDA: possibly still being computed).
        """
        with self._lock, torch.autocast(self.device.type, dtype=self._amp,
                                        enabled=self._amp is not None):
            return self.labels_and_confidence(tiles, with_confidence=False)[0]

    def _host_batch(self, n: int, rows: int, cols: int) -> torch.Tensor:
        """An empty (n, rows, cols, 3) uint8 host batch: pinned on CUDA (reused safely by
        torch's caching host allocator), plain memory on CPU."""
        return torch.empty((n, rows, cols, 3), dtype=torch.uint8,
                           pin_memory=self.device.type == "cuda")

    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Label a batch of RGB tiles.

        Args:
            tiles: (N, H, W, 3) uint8; H and W multiples of 32.

        Returns:
            (N, H, W) uint8 class indices (argmax over the model's C outputs).
        """
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        if self.device.type == "cuda":
            x = x.pin_memory()
        return self._launch(x).result()

    def predict_tiles_with_confidence(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_tiles` plus the confidence (:meth:`decide`).

        Args:
            tiles: (N, H, W, 3) uint8; H and W multiples of 32.

        Returns:
            ((N, H, W) uint8 labels, the same as :meth:`predict_tiles`'; (N, H, W) uint8
            confidence).
        """
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        if self.device.type == "cuda":
            x = x.pin_memory()
        pending = self._launch(x, with_confidence=True)
        return pending.result(), pending.confidence_result()

    # ------------------------------------------------------------------ strips
    def segment_rows(
        self,
        rows: RowsFn,
        grid: TileGrid,
        y0: int,
        y1: int,
        batch_size: int | None = None,
        prefetch: int = 2,
        with_confidence: bool = False,
        on_core_rows: Callable[[np.ndarray], None] | None = None,
    ) -> tuple:
        """Label output rows ``[y0, y1)`` of an image, reading it band by band (pipelined).

        Args:
            rows: ``rows(lo, hi)`` -> (hi - lo, W, 3) uint8 image rows (e.g.
                :func:`imaging.reading.image_rows`).
            grid: The image's tile grid (tile size, halo, width).
            y0, y1: Output rows (px).
            batch_size: Tiles per forward pass (a fitted edge tile's shape makes batches of
                its own: :func:`~worker.engine.tiling.iter_batches`); None: :meth:`batch_for`
                the grid's tile size.
            prefetch: Bands read ahead by the reader thread (0: read in this thread).
            with_confidence: Also return the (y1 - y0, W) uint8 confidence strip
                (:meth:`decide`, cropped to the same tile cores as the labels).
            on_core_rows: Called with each band's core as it is read, top to bottom: the
                (h, W, C) image rows of output rows ``[y0 + j * stride, ...)``, ``h`` =
                stride but for the image's last band (a view; the strip's rows are each passed
                once).

        Returns:
            ((y1 - y0, W) uint8 label strip, :class:`StripStats`); with ``with_confidence``
            (labels, confidence, stats).

        Raises:
            ImageFormatError: the image's pixel data cannot be decoded (from ``rows``).
        """
        started = time.perf_counter()
        batch_size = batch_size or self.batch_for(grid.tile_size)
        tiles = grid.strip_tiles(y0, y1)
        spans = grid.strip_spans(y0, y1)
        left = grid.col_spans[0].start
        out = np.empty((y1 - y0, grid.width), np.uint8)
        conf = np.empty_like(out) if with_confidence else None
        stats = StripStats(tiles=len(tiles), batch_size=batch_size)
        ahead = 1 if self.device.type == "cuda" else 0  # batches launched before placing
        pending: deque[tuple[list, PendingLabels]] = deque()
        bands: dict[int, np.ndarray] = {}  # tile row -> its input band, while needed
        loaded = 0
        with Prefetcher(iter_bands(rows, grid, y0, y1), prefetch, name="band-reader") as reader:
            for batch in iter_batches(tiles, batch_size, grid, spans):
                first, last = batch[0][0], batch[-1][0]
                while loaded <= last:
                    bands[loaded] = next(reader)
                    if on_core_rows is not None:
                        r = spans[loaded]
                        on_core_rows(bands[loaded][r.keep0 - r.start : r.keep1 - r.start,
                                                   -left : -left + grid.width])
                    loaded += 1
                for j in [j for j in bands if j < first]:
                    del bands[j]
                host = self._host_batch(len(batch), *grid.tile_shape_at(spans[first], batch[0][1]))
                view = host.numpy()
                for k, (j, i) in enumerate(batch):
                    view[k] = band_tile(bands[j], grid, i)
                pending.append((batch, self._launch(host, with_confidence)))
                while len(pending) > ahead:
                    stats.device_s += self._place(out, *pending.popleft(), grid, y0, y1, conf)
            while pending:
                stats.device_s += self._place(out, *pending.popleft(), grid, y0, y1, conf)
        stats.read_s, stats.read_wait_s = reader.busy_s, reader.wait_s
        stats.seconds = time.perf_counter() - started
        if conf is None:
            return out, stats
        return out, conf, stats

    @staticmethod
    def _place(out: np.ndarray, tiles: list, labels: PendingLabels, grid: TileGrid, y0: int,
               y1: int, conf: np.ndarray | None = None) -> float:
        """Wait for a batch's labels, write their kept pixels into ``out`` (and the
        confidence's into ``conf``); returns its device time."""
        place_tiles(out, labels.result(), tiles, grid, y0, y1)
        if conf is not None:
            place_tiles(conf, labels.confidence_result(), tiles, grid, y0, y1)
        return labels.device_seconds()

    def segment_strip(
        self, region: np.ndarray, grid: TileGrid, y0: int, y1: int, batch_size: int,
        with_confidence: bool = False,
    ):
        """Label output rows ``[y0, y1)`` of an image from its region with halo (in memory,
        through the same pipeline as :meth:`segment_rows`).

        Args:
            region: (r1 - r0, W, 3) uint8 rows ``grid.read_window(y0, y1)`` of the image.
            grid: The image's tile grid (tile size, halo, width).
            y0, y1: Output rows (px).
            batch_size: Tiles per forward pass.
            with_confidence: Also return the uint8 confidence strip (:meth:`decide`).

        Returns:
            (y1 - y0, W) uint8 label strip; with ``with_confidence`` (labels, confidence),
            both (y1 - y0, W) uint8.

        Raises:
            GeometryError: ``region`` does not have the rows and width the grid expects.
        """
        r0, _ = check_region(region, grid, y0, y1)
        out = self.segment_rows(region_rows(region, r0), grid, y0, y1, batch_size,
                                prefetch=0, with_confidence=with_confidence)
        return (out[0], out[1]) if with_confidence else out[0]

    def segment_strip_simple(
        self, region: np.ndarray, grid: TileGrid, y0: int, y1: int, batch_size: int,
        with_confidence: bool = False,
    ):
        """The reference implementation of :meth:`segment_strip`: the strip's bands padded in
        memory (:func:`worker.engine.tiling.strip_bands`), all tiles cut, one synchronous batch
        at a time. Same arguments, same result."""
        bands = strip_bands(region, grid, y0, y1)
        out = np.empty((y1 - y0, grid.width), dtype=np.uint8)
        conf = np.empty_like(out)
        for batch in iter_batches(grid.strip_tiles(y0, y1), batch_size, grid,
                                  grid.strip_spans(y0, y1)):
            tiles = cut_tiles(bands, batch, grid)
            if with_confidence:
                preds, c = self.predict_tiles_with_confidence(tiles)
                place_tiles(conf, c, batch, grid, y0, y1)
            else:
                preds = self.predict_tiles(tiles)
            place_tiles(out, preds, batch, grid, y0, y1)
        return (out, conf) if with_confidence else out

    def segment_array(
        self, image: np.ndarray, geometry: TileGeometry | None = None, *,
        batch_size: int | None = None, with_confidence: bool = False,
        fit_edges: bool = True,
    ):
        """Tiled inference of a whole in-memory image, strip by strip, exactly as the row tasks
        do it (evaluation, training's validation, tests).

        Args:
            image: (H, W, 3) uint8.
            geometry: Tile size and halo; default the package's (what serving uses for a job
                that names none).
            batch_size: Tiles per forward pass (default :meth:`batch_for`).
            with_confidence: Also return the confidence map (:meth:`decide`), as the row
                tasks write it.
            fit_edges: Fitted edge tiles, as a new job's rows lay them out (False: whole
                tiles, the layout of a job of spec version < 4; :meth:`grid`).

        Returns:
            (H, W) uint8 label map; with ``with_confidence`` (labels, confidence), both
            (H, W) uint8.
        """
        grid = self.grid(image.shape[1], image.shape[0], geometry, fit_edges=fit_edges)
        strips, confs = [], []
        for y0, y1 in grid.all_strip_bounds():
            r0, r1 = grid.read_window(y0, y1)
            batch = batch_size or self.batch_for(grid.tile_size)
            out = self.segment_strip(image[r0:r1], grid, y0, y1, batch, with_confidence)
            if with_confidence:
                strips.append(out[0])
                confs.append(out[1])
            else:
                strips.append(out)
        labels = np.concatenate(strips, axis=0)
        return (labels, np.concatenate(confs, axis=0)) if with_confidence else labels

    def segment_single_pass(self, image: np.ndarray, pad: int = 0) -> np.ndarray:
        """Label a whole in-memory image in one forward pass; the reference that tiled
        inference is compared against.

        Args:
            image: (H, W, 3) uint8.
            pad: Reflect-pad this many px on every side first (the grid's edge padding, so
                the image's edges see the context tiles give them), then crop.

        Returns:
            (H, W) uint8 label map.
        """
        h, w = image.shape[:2]
        padded = self.whole_image_input(image, pad)
        return self.predict_tiles(padded[None])[0, pad : pad + h, pad : pad + w]

    def whole_image_input(self, image: np.ndarray, pad: int = 0,
                          mode: str = "reflect") -> np.ndarray:
        """The input of a whole-image pass: ``image`` padded by ``pad`` px on every side and,
        in the same ``numpy.pad`` call, right and below to the smallest side the network takes
        (:meth:`_network_side`), as tiles are padded past the image's edge.

        Args:
            image: (H, W, 3) uint8.
            pad: Padding on every side (px).
            mode: ``numpy.pad`` mode (``reflect``, as tiles are padded; ``constant`` = black,
                ``symmetric``, ``edge``, ``wrap``).

        Returns:
            (H', W', 3) uint8 with ``image`` at ``[pad : pad + H, pad : pad + W]``.
        """
        h, w = image.shape[:2]
        extra_h, extra_w = (self._network_side(n + 2 * pad) - n - 2 * pad for n in (h, w))
        return np.pad(image, [(pad, pad + extra_h), (pad, pad + extra_w), (0, 0)], mode=mode)

    @torch.inference_mode()
    def probabilities_single_pass(self, image: np.ndarray, pad: int = 0,
                                  mode: str = "reflect") -> np.ndarray:
        """Class probabilities of a whole-image pass (:meth:`whole_image_input`, :meth:`logits`,
        softmax), cropped back to the image: what an image's edge costs a model, and means
        over packages (``benchmarks/edge_padding.py``).

        Returns:
            (C, H, W) float32 softmax probabilities.
        """
        h, w = image.shape[:2]
        x = torch.from_numpy(self.whole_image_input(image, pad, mode)[None]).contiguous()
        with self._lock:
            logits = self.logits(x.to(self.device))
        return logits.float().softmax(1)[0, :, pad : pad + h, pad : pad + w].cpu().numpy()

    def grid(self, width: int, height: int, geometry: TileGeometry | None = None,
             rows_per_task: int = 1, fit_edges: bool = True) -> TileGrid:
        """The tile grid this package labels a ``height`` x ``width`` px image with
        (:func:`serving_grid` at the package's input scale): the ``geometry`` (default the
        package's), :attr:`edge_pad` (at most the halo; None: the halo) and fitted edge
        tiles (False: the layout of a job of spec version < 4).

        Raises:
            GeometryError: an empty image or ``rows_per_task`` < 1.
        """
        geometry = geometry or self.package.geometry
        return serving_grid(width, height, geometry, self.package.input_scale,
                            edge_pad=self.edge_pad, rows_per_task=rows_per_task,
                            fit_edges=fit_edges)

    def _network_side(self, n: int) -> int:
        """:func:`network_side` at the package's input scale."""
        return network_side(n, self.package.input_scale)
