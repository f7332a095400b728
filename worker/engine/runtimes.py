"""Inference runtimes: how a batch of normalised tiles becomes logits.

The tiling, the band reader, the argmax and the placement of cores are the same for every
runtime (:class:`worker.engine.segmenter.Segmenter`); a runtime only maps

    (N, 3, T, T) float32 normalised tiles  ->  (N, C, T, T) float32 logits

on the segmenter's device. Chosen per machine by ``PELLETSEG_RUNTIME``:

=============  ==========================================================================
``eager``      PyTorch eager (float32 on CPU; bf16/fp16 autocast on CUDA per
               ``PELLETSEG_PRECISION``): the reference every other runtime is measured against
``compile``    ``torch.compile`` of the same module (falls back to eager, with a warning,
               if compilation fails on the first batch)
``openvino``   OpenVINO on the CPU, one compiled model per input shape, from the package's
               exported ONNX graph: float32 inference precision, or bfloat16 where the
               package was validated for it (``ModelPackage.cpu_precision``, with its first
               ``cpu_f32_convs`` convolutions in float32), the CPU has bfloat16 units and
               ``PELLETSEG_PRECISION`` is not ``fp32``
``onnxruntime``  ONNX Runtime (CPU execution provider; the CUDA one on a CUDA device where
               the installed onnxruntime has it), from the same graph
``tensorrt``   ONNX Runtime's TensorRT execution provider (CUDA only, where installed;
               unmeasured: no GPU has been lent to this project; it builds an engine per
               input shape, and each image size brings its fitted edge tiles' shapes)
``auto``       the fastest runtime that kept >= 99.9 % of eager fp32's labels on the real
               data (docs/performance.md, "Inference runtimes"): ``openvino`` on CPU when
               installed, else ``eager``; ``eager`` on CUDA
=============  ==========================================================================

The exported graph is a derived artefact of the model package
(:func:`worker.engine.exported.exported_graph`: cached per weights sha256, checked on every
load). A runtime that cannot be loaded raises :class:`RuntimeUnavailable`, which names the
setting and the package to install; ``auto`` then falls back to ``eager`` with a warning.
"""

from __future__ import annotations

import functools
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import structlog
import torch

from models.package import ModelPackage
from worker.engine.exported import exported_graph, module_of

__all__ = ["RUNTIMES", "Runtime", "RuntimeUnavailable", "cpu_has_bf16", "float32_cuts",
           "float32_prefix", "make_runtime", "openvino_precision", "resolve_runtime"]

log = structlog.get_logger(__name__)

#: Values of ``PELLETSEG_RUNTIME``.
RUNTIMES = ("auto", "eager", "compile", "openvino", "onnxruntime", "tensorrt")
#: Input shapes an OpenVINO runtime keeps compiled (least recently used dropped). Each compiled
#: model's infer request holds its own activation memory (a 1728 px tile's: ~480 MiB here), and
#: an image's fitted edge tiles bring up to three shapes besides the tile size's, which change
#: with the image's size: two keep a row's whole tiles and its fitted last column compiled,
#: and bound the memory to two requests' (docs/performance.md, "Fitted edge tiles").
MAX_COMPILED_SHAPES = 2


class RuntimeUnavailable(RuntimeError):
    """The runtime asked for cannot run here (package not installed, wrong device)."""


class Runtime:
    """Maps (N, 3, T, T) float32 normalised tiles to (N, C, T, T) float32 logits.

    Attributes:
        name: The runtime's ``PELLETSEG_RUNTIME`` value.
        torch_module: True when the model runs as a torch module (then channels_last input
            and CUDA autocast apply); False for runtimes fed NCHW float32 host arrays.
        precision: What a CPU runtime computes in: ``f32``, or ``bf16`` (OpenVINO, where the
            package allows it); CUDA autocast is the segmenter's.
        f32_convs: In bfloat16, how many of the graph's leading convolutions keep float32
            (OpenVINO, :func:`float32_prefix`); 0 everywhere else.
    """

    name = "runtime"
    torch_module = False
    precision = "f32"
    f32_convs = 0
    #: Set where the runtime also takes raw tiles and normalises them inside its graph
    #: (:meth:`from_uint8`): the per-channel (mean, std) on the 0-255 scale. None: it takes
    #: normalised float32 tiles only.
    uint8_normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_uint8(self, tiles: torch.Tensor) -> torch.Tensor:
        """(N, T, T, 3) uint8 RGB tiles -> (N, C, T, T) float32 logits, ``(x - mean) / std``
        computed inside the runtime's graph (:attr:`uint8_normalisation`).

        Raises:
            NotImplementedError: the runtime has no such graph (:attr:`uint8_normalisation`
                is None).
        """
        raise NotImplementedError(f"runtime {self.name} takes normalised float32 tiles only")


class EagerRuntime(Runtime):
    """The torch module itself, optionally through ``torch.compile``."""

    torch_module = True

    def __init__(self, model: torch.nn.Module, compile: bool = False):
        self.model = model
        self.name = "compile" if compile else "eager"
        self._compiled = torch.compile(model) if compile else None
        self._compile_checked = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            if self._compile_checked:
                return self._compiled(x)
            try:
                out = self._compiled(x)
                self._compile_checked = True
                return out
            except Exception as e:
                log.warning("inference.compile_failed", error=f"{type(e).__name__}: {e}")
                self._compiled = None
                self.name = "eager"
        return self.model(x)


def _host_array(x: torch.Tensor) -> np.ndarray:
    """(N, 3, T, T) float32 NCHW C-contiguous host array of a tile batch."""
    return np.ascontiguousarray(x.detach().to("cpu", memory_format=torch.contiguous_format)
                                .float().numpy())


class OpenVinoRuntime(Runtime):
    """OpenVINO on the CPU, float32 inference precision (``inference_precision="f32"``, the
    worker's), latency hint (one stream).

    ``inference_precision="bf16"`` lets OpenVINO compute in bfloat16 on CPUs with AMX or
    AVX-512 BF16 units (where it is the plugin's own default; it is pinned here, so a
    worker computes in bfloat16 only for a package validated for it, on such a CPU:
    :func:`openvino_precision`). ``precision`` holds the value in use. With ``f32_convs``
    > 0 the graph's operations before its (``f32_convs`` + 1)-th convolution keep float32
    (:func:`float32_prefix`): the bundled model in bfloat16 kept 99.74 % of its float32 labels
    on LumenStone images, and 99.933 % with its first 9 convolutions in float32, at 2.2x the
    float32 speed (docs/performance.md, "Mixed precision").

    One model is compiled per input shape (tile batches have one shape per tile size and
    batch size, and an image's fitted edge tiles theirs; the :data:`MAX_COMPILED_SHAPES`
    most recently used are kept; compiling a 1728 px shape took 0.17 s and its first inference
    0.2 s more than the next on a Zen 4 core): static shapes took 0.45 s per 1024 px tile
    against 0.85 s with dynamic ones
    in one timing on this project's CPU, though another, less loaded, had the dynamic model at
    0.47 s (docs/performance.md); static was never the slower.

    With ``normalisation`` ((mean, std) per channel, 0-255 scale) the runtime also takes raw
    (N, T, T, 3) uint8 tiles (:meth:`from_uint8`): OpenVINO's preprocessing (``ov.preprocess.
    PrePostProcessor``: u8 NHWC in, f32, mean, scale, NCHW) becomes part of the compiled
    graph, which folds it into the first layer instead of three float passes over the tile in
    PyTorch: 0.83 s against 0.89 s per 1728 px tile on one thread, logits within 5e-6 of the
    float path's and the same labels (docs/performance.md, 2026-12-05).
    """

    name = "openvino"

    def __init__(self, graph: Path, threads: int, inference_precision: str = "f32",
                 normalisation: tuple[Sequence[float], Sequence[float]] | None = None,
                 f32_convs: int = 0):
        if inference_precision not in ("f32", "bf16"):
            raise ValueError(f"inference_precision must be f32 or bf16, got {inference_precision!r}")
        if f32_convs < 0:
            raise ValueError(f"f32_convs must be >= 0, got {f32_convs}")
        if normalisation is not None:
            mean, std = (tuple(float(v) for v in a) for a in normalisation)
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise ValueError(f"normalisation must be 3 means and 3 positive stds, got "
                                 f"{normalisation!r}")
            self.uint8_normalisation = (mean, std)
        try:
            import openvino as ov
        except ImportError as e:
            raise RuntimeUnavailable("PELLETSEG_RUNTIME=openvino needs the openvino package: "
                                     "pip install 'pelletseg[worker]' (or openvino)") from e
        self.precision = inference_precision
        self._core = ov.Core()
        self._model = self._core.read_model(str(graph))
        self.f32_convs = f32_convs if inference_precision == "bf16" else 0
        if self.f32_convs:
            self._model = float32_prefix(self._model, self.f32_convs)
        # No pinning: OpenVINO pins its threads to cores by default, and several worker
        # processes on one machine (each 1 thread) would then share the first core.
        self._config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                        "INFERENCE_PRECISION_HINT": inference_precision,
                        "ENABLE_CPU_PINNING": False}
        if threads > 0:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._requests: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def _request(self, shape: tuple[int, ...], uint8: bool = False):
        """The infer request of input ``shape`` (NCHW float32, or NHWC uint8 with ``uint8``),
        compiled on first use."""
        key = (shape, uint8)
        with self._lock:
            if key in self._requests:
                self._requests.move_to_end(key)
            else:
                model = self._model.clone()
                if uint8:
                    n, h, w, _ = shape
                    model.reshape({0: [n, 3, h, w]})
                    model = self._with_normalisation(model)
                else:
                    model.reshape({0: list(shape)})
                compiled = self._core.compile_model(model, "CPU", self._config)
                self._requests[key] = compiled.create_infer_request()
                if len(self._requests) > MAX_COMPILED_SHAPES:
                    self._requests.popitem(last=False)
                log.info("inference.openvino_compiled", shape=list(shape),
                         input="uint8" if uint8 else "float32")
            return self._requests[key]

    def float32_cuts(self) -> list[int]:
        """The counts of leading convolutions this graph may keep in float32
        (:func:`float32_cuts`)."""
        return float32_cuts(self._model)

    def _with_normalisation(self, model):
        """``model`` preceded by u8 NHWC -> f32 -> ``(x - mean) / std`` -> NCHW."""
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        mean, std = self.uint8_normalisation
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(list(mean)).scale(list(std))
        return ppp.build()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._infer(_host_array(x), uint8=False)

    def _infer(self, arr: np.ndarray, uint8: bool) -> torch.Tensor:
        """The logits of one host batch ``arr`` through the request of its shape and dtype."""
        out = self._request(arr.shape, uint8=uint8).infer({0: arr})[0]
        return torch.from_numpy(np.array(out, copy=True))  # the request reuses its buffer

    def from_uint8(self, tiles: torch.Tensor) -> torch.Tensor:
        if self.uint8_normalisation is None:
            return super().from_uint8(tiles)
        if tiles.dtype != torch.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
            raise ValueError(f"expected (N, T, T, 3) uint8 tiles, got {tiles.dtype} "
                             f"{tuple(tiles.shape)}")
        return self._infer(np.ascontiguousarray(tiles.detach().cpu().numpy()), uint8=True)


#: OpenVINO operation types counted by :func:`float32_prefix`.
CONVOLUTIONS = ("Convolution", "GroupConvolution")


def _ir(model):
    """``model`` written as OpenVINO IR: (the XML tree, its weights as uint8)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="pelletseg-ov-") as tmp:
        xml, weights = Path(tmp) / "model.xml", Path(tmp) / "model.bin"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return ET.parse(xml), np.fromfile(weights, dtype=np.uint8)


def _cuts(root) -> dict[int, int]:
    """``{n: index}`` for every n >= 1 at which an IR's layers (``root``, topological order)
    may be cut into float32 and bfloat16: index = the position of the (n + 1)-th convolution
    (the layer count after the last one), for every n whose cut leaves no ``Add`` with image
    data from both sides (a residual block split between precisions: OpenVINO 2026.4's CPU
    plugin failed to compile such a ResNet graph, "object is not initialized"). Shape
    computations (``ShapeOf`` and what follows from it alone) carry no image data."""
    layers = list(root.find("layers"))
    position = {layer.get("id"): i for i, layer in enumerate(layers)}
    inputs: dict[int, list[int]] = {}
    for edge in root.find("edges"):
        inputs.setdefault(position[edge.get("to-layer")], []).append(
            position[edge.get("from-layer")])
    data: list[bool] = []
    for i, layer in enumerate(layers):
        kind = layer.get("type")
        data.append(kind == "Parameter" or (kind not in ("Const", "ShapeOf") and any(
            data[j] for j in inputs.get(i, ()))))
    adds = [[j for j in inputs.get(i, ()) if data[j]] for i, layer in enumerate(layers)
            if layer.get("type") == "Add"]
    adds = [a for a in adds if len(a) > 1]
    convs = [i for i, layer in enumerate(layers) if layer.get("type") in CONVOLUTIONS]
    cuts = {}
    for n, end in enumerate([*convs[1:], len(layers)], start=1):
        if all(len({j < end for j in a}) == 1 for a in adds):
            cuts[n] = end
    return cuts


def float32_cuts(model) -> list[int]:
    """The counts of leading convolutions ``model`` (an ``openvino.Model``) may keep in
    float32 (:func:`float32_prefix`): every count whose cut splits no residual block,
    ascending; the last is all of them."""
    return sorted(_cuts(_ir(model)[0].getroot()))


def float32_prefix(model, convolutions: int):
    """``model`` (an ``openvino.Model``) with every operation before its
    (``convolutions`` + 1)-th convolution (``Convolution`` or ``GroupConvolution``, in
    topological order) marked to keep float32 when the rest computes in bfloat16.

    The mark is OpenVINO's own for operations that must not lose precision (the IR
    attribute ``precise``, written by its float16 compression for sensitive subgraphs; the
    CPU plugin keeps such nodes in their original precision under
    ``INFERENCE_PRECISION_HINT=bf16``, openvinotoolkit/openvino pull request 21440). The
    Python API cannot set it on a node, so the model is written to IR, the attribute added to
    the layers' ``rt_info``, and the IR read back from memory. The first layers are where
    bfloat16 flips labels: their input carries the pixels' full 8 bits, and bfloat16 keeps 8
    significant bits (docs/performance.md, "Mixed precision"). A count whose cut would split
    a residual block between the precisions is refused (:func:`float32_cuts` lists the
    others).

    Raises:
        ValueError: ``convolutions`` < 1, more than the graph has, or a cut inside a
            residual block.
    """
    import openvino as ov

    if convolutions < 1:
        raise ValueError(f"convolutions must be >= 1, got {convolutions}")
    tree, blob = _ir(model)
    root = tree.getroot()
    cuts = _cuts(root)
    total = max(cuts, default=0)  # keeping every convolution in float32 splits nothing
    if convolutions > total:
        raise ValueError(f"the graph has {total} convolutions, fewer than the {convolutions} "
                         "asked to keep float32 (cpu_f32_convs of the model package)")
    if convolutions not in cuts:
        near = [n for n in cuts if n < convolutions][-1:] + [n for n in cuts if n > convolutions][:1]
        raise ValueError(f"keeping the first {convolutions} convolutions in float32 would split a "
                         f"residual block between float32 and bfloat16; nearest counts that do "
                         f"not: {near} (cpu_f32_convs of the model package)")
    for layer in list(root.find("layers"))[:cuts[convolutions]]:
        if layer.get("type") in ("Const", "Parameter", "Result"):
            continue
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ET.Element("rt_info")
            layer.insert(0, rt_info)
        ET.SubElement(rt_info, "attribute", {"name": "precise", "version": "0"})
    return ov.Core().read_model(ET.tostring(root), ov.Tensor(blob))


class OnnxRuntime(Runtime):
    """ONNX Runtime with all graph optimisations, on the CPU, CUDA or TensorRT provider."""

    def __init__(self, graph: Path, threads: int, device: torch.device, tensorrt: bool = False):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeUnavailable("this runtime needs onnxruntime (onnxruntime-gpu on CUDA): "
                                     "pip install 'pelletseg[worker]'") from e
        self.name = "tensorrt" if tensorrt else "onnxruntime"
        available = ort.get_available_providers()
        if tensorrt:
            if device.type != "cuda" or "TensorrtExecutionProvider" not in available:
                raise RuntimeUnavailable(
                    "PELLETSEG_RUNTIME=tensorrt needs a CUDA device and onnxruntime-gpu with "
                    f"TensorRT (providers here: {available}, device {device})")
            providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
        elif device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise RuntimeUnavailable("PELLETSEG_RUNTIME=onnxruntime on CUDA needs "
                                         f"onnxruntime-gpu (providers here: {available})")
            providers = ["CUDAExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads > 0:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(graph), options, providers=providers)
        self._device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self._session.run(None, {"tiles": _host_array(x)})[0]
        return torch.from_numpy(out).to(self._device)


def resolve_runtime(name: str, device: torch.device) -> str:
    """The runtime ``name`` stands for on ``device``: ``auto`` -> ``openvino`` on CPU where
    the package is installed, else ``eager``; any other value is returned as it is.

    Raises:
        ValueError: ``name`` is not one of :data:`RUNTIMES`.
    """
    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {name!r}")
    if name != "auto":
        return name
    if device.type == "cpu":
        import importlib.util

        if importlib.util.find_spec("openvino") is not None:
            return "openvino"
    return "eager"


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bfloat16 natively on this machine (AMX or
    AVX-512 BF16 units: ``BF16`` in its ``OPTIMIZATION_CAPABILITIES``); False where OpenVINO
    is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_precision(package: ModelPackage, precision: str = "bf16",
                       cpu_precision: str | None = None) -> str:
    """The OpenVINO inference precision (``f32`` or ``bf16``) a package is served at here.

    ``cpu_precision`` None (workers): ``bf16`` only where the package was validated for it
    (``package.cpu_precision``), ``precision`` (``PELLETSEG_PRECISION``) is not ``fp32`` and
    the CPU has bfloat16 units (:func:`cpu_has_bf16`; elsewhere bfloat16 would be emulated,
    slower and not what was validated), else ``f32``. ``cpu_precision`` ``f32`` / ``bf16``:
    that, whatever the package says (measurements).

    Raises:
        ValueError: ``cpu_precision`` is not None, ``f32`` or ``bf16``.
        RuntimeUnavailable: ``cpu_precision="bf16"`` on a CPU without bfloat16 units.
    """
    if cpu_precision not in (None, "f32", "bf16"):
        raise ValueError(f"cpu_precision must be f32 or bf16, got {cpu_precision!r}")
    if cpu_precision == "bf16" and not cpu_has_bf16():
        raise RuntimeUnavailable("OpenVINO in bfloat16 needs a CPU with bfloat16 units (AMX or "
                                 "AVX-512 BF16); this one has none, so it would be emulated")
    if cpu_precision is not None:
        return cpu_precision
    if package.cpu_precision == "bf16" and precision != "fp32" and cpu_has_bf16():
        return "bf16"
    return "f32"


def make_runtime(name: str, model: torch.nn.Module | Callable[[], torch.nn.Module],
                 package: ModelPackage, device: torch.device,
                 *, threads: int, cache_dir: str | Path | None, folded: bool,
                 precision: str = "bf16", cpu_precision: str | None = None,
                 cpu_f32_convs: int | None = None) -> Runtime:
    """The runtime ``name`` (see :func:`resolve_runtime`) for a loaded model.

    Args:
        name: A :data:`RUNTIMES` value.
        model: The package's network, eval mode, on ``device`` (batch norms folded or not),
            or a function returning it, called only by the runtimes that need it: eager and
            compile at once, the others only to export a graph the cache lacks.
        package: Its ``model.json``.
        device: Where inference runs.
        threads: Intra-op threads for ONNX Runtime / OpenVINO (0: their default).
        cache_dir: Folder of exported graphs (None: ``PELLETSEG_EXPORT_CACHE_DIR``).
        folded: Whether ``model``'s batch norms are folded (keys the exported graph).
        precision: ``PELLETSEG_PRECISION`` (``fp32`` keeps OpenVINO in float32 for every
            package); ``cpu_precision``: OpenVINO's precision forced (:func:`openvino_precision`).
        cpu_f32_convs: In bfloat16, how many leading convolutions keep float32
            (:func:`float32_prefix`); None: the package's ``cpu_f32_convs``.

    Raises:
        ValueError: unknown runtime or precision, or more float32 convolutions than the graph
            has.
        RuntimeUnavailable: an explicitly named runtime cannot run here.
        ExportError: the graph could not be exported.
    """
    resolved = resolve_runtime(name, device)
    try:
        return _make(resolved, model, package, device, threads, cache_dir, folded,
                     precision, cpu_precision, cpu_f32_convs)
    except RuntimeUnavailable as e:
        if name != "auto":
            raise
        log.warning("inference.runtime_fallback", wanted=resolved, using="eager", error=str(e))
        return EagerRuntime(module_of(model))


def _make(name, model, package, device, threads, cache_dir, folded, precision,
          cpu_precision, cpu_f32_convs) -> Runtime:
    if name in ("eager", "compile"):
        return EagerRuntime(module_of(model), compile=name == "compile")
    if cache_dir is None:
        from core.settings import Settings

        cache_dir = Settings().resolved_export_cache_dir

    if name == "openvino":
        if device.type != "cpu":
            raise RuntimeUnavailable(f"PELLETSEG_RUNTIME=openvino runs on the CPU only, "
                                     f"not on {device}")
        try:
            import openvino  # noqa: F401 - checked before the export, which costs seconds
        except ImportError as e:
            raise RuntimeUnavailable("PELLETSEG_RUNTIME=openvino needs the openvino package: "
                                     "pip install 'pelletseg[worker]'") from e
        inference_precision = openvino_precision(package, precision, cpu_precision)
        norm = package.normalisation
        return OpenVinoRuntime(exported_graph(model, package, cache_dir, folded=folded), threads,
                               inference_precision=inference_precision,
                               normalisation=([m * 255.0 for m in norm.mean],
                                              [s * 255.0 for s in norm.std]),
                               f32_convs=package.cpu_f32_convs if cpu_f32_convs is None
                               else cpu_f32_convs)
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise RuntimeUnavailable(f"PELLETSEG_RUNTIME={name} needs onnxruntime: "
                                 "pip install 'pelletseg[worker]'") from e
    graph = exported_graph(model, package, cache_dir, folded=folded)
    return OnnxRuntime(graph, threads, device, tensorrt=name == "tensorrt")
