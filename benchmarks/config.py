"""What one benchmark run measures (:class:`BenchConfig`) and on what machine
(:func:`machine_info`)."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.geometry import DEFAULT_GEOMETRY, TileGeometry

#: Image sizes (gigapixels) whose worker and reducer peak RSS are measured.
RSS_SIZES_GPX = (0.1, 0.35, 1.0)


@dataclass(frozen=True)
class BenchConfig:
    """Parameters of one benchmark run. ``0`` fields are resolved by :meth:`resolved`.

    Attributes:
        device: ``cpu`` or ``cuda`` (``cuda:N``).
        model: ``ebc-unet-mnv2`` (bundled, trained), ``unet-resnet34`` (the issue's
            reference network, random init) or the folder of any model package.
        image_side: Edge of the square bench image (px), a mosaic of real micrographs; None:
            the smallest side >= ``min_image_side`` that is a whole number of strides of
            both the measured geometry and today's, with a whole number of tile rows per
            worker on both (:func:`fitting_side`), so neither path pays for cores past the
            image edge or for a worker idle at the end.
        min_image_side: Smallest automatic ``image_side`` (px).
        tile_size, halo: Tile geometry T and halo (px) of the pipeline, the limit and the
            peers; stride = T - 2 * halo; None: the model package's (:meth:`for_package`).
        runtime: How the model runs in the pipeline, the limit and the peers
            (``PELLETSEG_RUNTIME``: ``auto``, ``eager``, ``openvino``, ...).
        reference: Also run today's path (``reference_runtime`` at ``reference_tile_size`` /
            ``reference_halo``) through the same queue, alternated with the pipeline (and
            MONAI), and its model-only limit; reported as ``reference_pipeline_mpx_s``.
        reference_runtime, reference_tile_size, reference_halo: Today's path: PyTorch eager
            fp32 at T = 1024 px, halo = 128 px (the geometry of issue 6's measurements).
        workers: Worker processes of the queue run; 0: one per core on CPU (each with
            cores / workers torch threads), 1 on CUDA.
        threads: torch intra-op threads per worker; 0: cores // workers.
        batch_size: Tiles per forward pass; 0: 1 on CPU, from free memory on CUDA.
        rows_in_flight: Row tasks per worker at once; 0: 1 on CPU, 3 on CUDA.
        precision: ``PELLETSEG_PRECISION`` of the measured path (``bf16``, ``fp16``,
            ``fp32``): autocast on CUDA; on CPU ``fp32`` pins float32 for a package validated
            for bfloat16 (which is otherwise served so on CPUs with bfloat16 units). Today's
            path is eager float32 whatever it says.
        stream_reduce: Run the queue job with a streaming stitcher (``PELLETSEG_STREAM_REDUCE``)
            and a worker of its own for the reduce queue; None: on for CUDA (idle CPU cores
            stitch while the device computes), off for CPU (the stitcher would take cores
            from the rows).
        limit_seconds: Duration of each model-only throughput measurement (s).
        rebracket_limit: Measure the limit again after the other runs (load drift check).
        peers: Run MONAI and the thesis-style baseline.
        pairs: Runs of the pipeline and of MONAI, alternated (pipeline, MONAI, pipeline, ...)
            so that both see the same drift of the machine's load; their medians and the
            median of the per-pair ratios are reported (1: one run each).
        rss_sizes_gpx: Image sizes for the memory runs (gigapixels); empty: skip them.
        queued_jobs: Jobs of the bench image submitted at once in a last queue run (a lab's
            batch of pellets): the throughput in a stream of jobs, where one job's reducer
            overlaps the next one's rows, beside the single job's end to end; 0: skip it.
        work_dir: Scratch folder (images, model, stacks); images are kept and reused.
        timeout_s: Longest wait for one queued job (s).
    """

    device: str = "cpu"
    model: str = "ebc-unet-mnv2"
    image_side: int | None = None
    min_image_side: int = 4608
    tile_size: int | None = None
    halo: int | None = None
    runtime: str = "auto"
    reference: bool = True
    reference_runtime: str = "eager"
    reference_tile_size: int = DEFAULT_GEOMETRY.tile_size
    reference_halo: int = DEFAULT_GEOMETRY.halo
    workers: int = 0
    threads: int = 0
    batch_size: int = 0
    rows_in_flight: int = 0
    precision: str = "bf16"
    stream_reduce: bool | None = None
    limit_seconds: float = 12.0
    rebracket_limit: bool = True
    peers: bool = True
    pairs: int = 3
    rss_sizes_gpx: tuple[float, ...] = RSS_SIZES_GPX
    queued_jobs: int = 0
    work_dir: Path = field(default_factory=lambda: Path.home() / ".pelletseg" / "bench")
    timeout_s: float = 3600.0

    @classmethod
    def preset(cls, quick: bool, device: str = "cpu", **overrides) -> BenchConfig:
        """The ``--quick`` (under 10 minutes on 2 CPU cores) or full preset for ``device``.

        CPU quick: the bundled model on a mosaic of at least 4608 px (21 Mpx; 6144 px = 38
        Mpx for strides 1536 and 768 on 2 workers, :func:`fitting_side`); CPU full: at least
        9216 px (85 Mpx) and longer limit runs. CUDA: the reference UNet-ResNet34 on
        18600 px (346 Mpx, the issue's pellet size) or 9216 px for quick.
        """
        cuda = device.startswith("cuda")
        base = {"device": device}
        if cuda:
            base.update(model="unet-resnet34", image_side=9216 if quick else 18600,
                        limit_seconds=10.0 if quick else 20.0)
        else:
            base.update(min_image_side=4608 if quick else 9216,
                        limit_seconds=12.0 if quick else 30.0)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    @property
    def stride(self) -> int:
        """Core edge of a tile (px)."""
        return self.tile_size - 2 * self.halo

    @property
    def geometry(self) -> TileGeometry:
        """The tile geometry measured (raises GeometryError if invalid)."""
        return TileGeometry(self.tile_size, self.halo)

    @property
    def cuda(self) -> bool:
        """True for a CUDA device."""
        return self.device.startswith("cuda")

    def for_package(self, geometry: TileGeometry) -> BenchConfig:
        """A copy whose unset tile size and halo are taken from the model package's
        ``geometry`` (a size or halo given alone keeps the other from the package)."""
        return replace(self, tile_size=geometry.tile_size if self.tile_size is None else self.tile_size,
                       halo=geometry.halo if self.halo is None else self.halo)

    def fitted(self) -> BenchConfig:
        """A copy with ``image_side`` chosen by :func:`fitting_side` if it is None (call after
        :meth:`resolved` and :meth:`for_package`)."""
        if self.image_side is not None:
            return self
        strides = [self.stride] + ([self.reference_geometry.stride] if self.reference else [])
        return replace(self, image_side=fitting_side(self.min_image_side, strides, self.workers))

    def as_reference(self) -> BenchConfig:
        """The same run on today's path: the reference runtime and geometry."""
        return replace(self, runtime=self.reference_runtime, tile_size=self.reference_tile_size,
                       halo=self.reference_halo)

    @property
    def reference_geometry(self) -> TileGeometry:
        """Today's tile geometry (raises GeometryError if invalid)."""
        return TileGeometry(self.reference_tile_size, self.reference_halo)

    def resolved(self) -> BenchConfig:
        """A copy with every ``0`` (auto) field filled in for this machine (the batch size
        stays 0 on CUDA: it is measured once the model is loaded)."""
        cores = os.cpu_count() or 1
        workers = self.workers or (1 if self.cuda else cores)
        threads = self.threads or max(1, cores // workers)
        batch = self.batch_size or (0 if self.cuda else 1)
        rows = self.rows_in_flight or (3 if self.cuda else 1)
        stream = self.cuda if self.stream_reduce is None else self.stream_reduce
        return replace(self, workers=workers, threads=threads, batch_size=batch,
                       rows_in_flight=rows, stream_reduce=stream)

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        d = asdict(self)
        d["work_dir"] = str(self.work_dir)
        d["rss_sizes_gpx"] = list(self.rss_sizes_gpx)
        return d


def fitting_side(min_side: int, strides: list[int], workers: int, max_factor: float = 2.0) -> int:
    """The smallest square side (px) >= ``min_side`` that is a multiple of every stride and
    gives each stride a tile-row count divisible by ``workers``; ``min_side`` rounded up to a
    multiple of the first stride if none is found below ``max_factor * min_side``."""
    side = math.lcm(*strides)
    for k in range(max(1, -(-min_side // side)), int(max_factor * min_side) // side + 1):
        if all((k * side // s) % workers == 0 for s in strides):
            return k * side
    return -(-min_side // strides[0]) * strides[0]


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``uptime``); empty where unavailable."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info(device: str) -> dict:
    """Facts of this machine and software, for the report."""
    import pyvips
    import torch

    info = {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu_cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "load_average_start": load_average(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info
