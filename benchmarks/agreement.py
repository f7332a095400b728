"""Label agreement on the real data: which tile geometries keep the whole-image labels, and
which runtimes keep eager fp32's labels (``pelletseg agreement``).

Images: the LumenStone S2 validation images (3396 x 2547 px optical micrographs, whole) and
2 x 2 mosaics of NASA EBC SEM images (2048 x 2048 px: four 1024 px images side by side, in
file-name order) from ``../shared/data`` (never copied into the repository).

- **Geometry**: for each tile geometry (and edge-tile layout: ``fitted``, a new job's, and
  ``whole``, a job's of spec version < 4; :class:`worker.engine.tiling.TileGrid`), the labels
  of tiled inference (``Segmenter.segment_array``,
  exactly the row tasks' path) against one forward pass of the whole image reflect-padded by
  the halo (``Segmenter.segment_single_pass``; the definition of ``tests/worker/engine/test_seams.py``),
  both through PyTorch eager fp32: % of equal pixels per image, the minimum and the pooled
  figure per data set. Beside it the geometry's cost: model pixels computed per output pixel
  on a 346 Mpx pellet (20480 x 16896 px) and on each image, in that layout, and, per runtime, the
  model-only output Mpx/s of real tiles on this machine (:func:`tile_rate`).
- **Runtimes**: at each geometry asked for, the tiled labels of every runtime against eager
  fp32's tiled labels at the same geometry (the runtime's own effect) and against the
  whole-image eager labels (what a job gets).

``onnxruntime-int8`` is a candidate measured here only (not a worker runtime): the exported
graph statically quantised by ONNX Runtime (QDQ, int8 weights per channel, uint8
activations), calibrated on 8 tiles of the LumenStone *training* images. ``openvino-bf16``
is another: the same graph through OpenVINO with bfloat16 inference precision (the CPU's
AMX / AVX-512 BF16 units; refused on CPUs without them), every layer in bfloat16 whatever the
package says; ``openvino-bf16@N`` keeps the graph's first N convolutions in float32
(:func:`worker.engine.runtimes.float32_prefix`, the package field ``cpu_f32_convs``).
``openvino-int8`` / ``openvino-int8@N`` and ``openvino-int8-ac@N`` are the int8 candidates
through OpenVINO (:func:`openvino_int8_segmenter`): NNCF's post-training quantisation, the
first N convolutions left in float32, and the accuracy-controlled variant that returns the
operations costing the most labels to float32 until the labels hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.geometry import TileGeometry

#: The pellet of the issues: 20480 x 16896 px = 346 Mpx.
PELLET = (20480, 16896)
INT8 = "onnxruntime-int8"
OPENVINO_BF16 = "openvino-bf16"
OPENVINO_INT8 = "openvino-int8"
OPENVINO_INT8_AC = "openvino-int8-ac"
#: Share of pixels (0-1) whose label may change on the validation tiles of
#: ``openvino-int8-ac``: 0.05 %, half of what the 99.9 % rule allows, as a margin for images
#: the quantisation never saw.
INT8_MAX_DROP = 0.0005

Say = Callable[[str], None]


def pellet_cost(geometry: TileGeometry, width: int = PELLET[0], height: int = PELLET[1],
                fit_edges: bool = True) -> float:
    """Model pixels computed per output pixel for a ``width x height`` px image: the pixels of
    its tiles / (width x height) (the overlap and what edge tiles show past their cores), with
    fitted edge tiles or whole ones (:class:`worker.engine.tiling.TileGrid`)."""
    from worker.engine.tiling import TileGrid

    return TileGrid(width, height, geometry, fit_edges=fit_edges).tile_pixels / (width * height)


def _whole(path: Path) -> np.ndarray:
    """The whole image at ``path`` as (H, W, 3) uint8."""
    from imaging.reading import open_image, read_rows

    image = open_image(path, max_pixels=10**9)
    return read_rows(image, 0, image.height)


def real_images(data_dir: Path, lumenstone: int = 6, ebc_mosaics: int = 3) -> list[tuple[str, str, np.ndarray]]:
    """``[(data set, name, (H, W, 3) uint8)]``: the first ``lumenstone`` LumenStone S2 val
    images (whole) and ``ebc_mosaics`` 2 x 2 mosaics of NASA EBC images; a count of 0 needs
    no folder of that data set (the GPU check carries NASA EBC only, benchmarks/gpu).

    Raises:
        FileNotFoundError: ``data_dir`` lacks the images of a data set asked for, or nothing
            is asked for.
    """
    ls = sorted((data_dir / "lumenstone-s2" / "images" / "val").glob("*.jpg"))[:lumenstone]
    ebc = sorted((data_dir / "nasa-ebc" / "images").glob("*.png"))
    missing = (lumenstone and not ls) or (ebc_mosaics and len(ebc) < 4)
    if missing or not (lumenstone or ebc_mosaics):
        raise FileNotFoundError(f"{data_dir}: needs lumenstone-s2/images/val/*.jpg (--lumenstone "
                                f"{lumenstone}) and nasa-ebc/images/*.png (--ebc-mosaics "
                                f"{ebc_mosaics}, 4 images each; ../shared/data)")
    out = [("lumenstone-s2", f"val/{p.name}", _whole(p)) for p in ls]
    for k in range(min(ebc_mosaics, len(ebc) // 4)):
        four = [_whole(p)[:1024, :1024] for p in ebc[4 * k : 4 * k + 4]]
        mosaic = np.concatenate([np.concatenate(four[:2], axis=1),
                                 np.concatenate(four[2:], axis=1)], axis=0)
        out.append(("nasa-ebc", "2x2 " + "+".join(p.stem for p in ebc[4 * k : 4 * k + 4]), mosaic))
    return out


def calibration_tiles(data_dir: Path, segmenter, tile: int = 512, n: int = 8) -> list[np.ndarray]:
    """``n`` normalised (1, 3, tile, tile) float32 tiles from LumenStone *training* images."""
    import torch

    from imaging.reading import open_image, read_rows

    paths = sorted((data_dir / "lumenstone-s2" / "images" / "train").glob("*.jpg"))[:n]
    tiles = []
    for i, path in enumerate(paths):
        image = read_rows(open_image(path, max_pixels=10**9), 0, tile * 2)
        x0 = (i * 397) % (image.shape[1] - tile)
        t = torch.from_numpy(np.ascontiguousarray(image[None, :tile, x0 : x0 + tile]))
        tiles.append(segmenter.normalise(t).contiguous().numpy())
    return tiles


def int8_tiles(data_dir: Path, segmenter, ebc_skip: int, tile: int = 512
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Calibration and validation tiles of the int8 candidates, normalised (1, 3, tile, tile)
    float32, none from the images whose labels are compared (LumenStone *val*, the first
    ``ebc_skip`` NASA EBC images in file-name order):

    - calibration: 16 tiles of the LumenStone *training* images (:func:`calibration_tiles`)
      and, from each NASA EBC image after the first ``ebc_skip``, its top-left tile and the
      one at (tile, tile) px;
    - validation (``openvino-int8-ac``): one tile of each of the first 24 LumenStone training
      images, at another place than its calibration tile (the first image's excepted: both
      at its top-left corner), and every second NASA EBC tile (the model's own domain, seen
      in calibration).
    """
    import torch

    def norm(a: np.ndarray, y: int, x: int) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a[None, y : y + tile, x : x + tile]))
        return segmenter.normalise(t).contiguous().numpy()

    ebc = [norm(a, y, y) for p in sorted((data_dir / "nasa-ebc" / "images").glob("*.png"))[ebc_skip:]
           for a in [_whole(p)] for y in (0, tile)]
    validation = []
    for i, p in enumerate(sorted((data_dir / "lumenstone-s2" / "images" / "train").glob("*.jpg"))[:24]):
        a = _whole(p)
        validation.append(norm(a, (i * 733) % (a.shape[0] - tile), (i * 1291) % (a.shape[1] - tile)))
    return calibration_tiles(data_dir, segmenter, tile, n=16) + ebc, validation + ebc[::2]


def candidate(name: str, bases: dict[str, bool]) -> tuple[str, int]:
    """``(base, N)`` of a candidate runtime name ``base`` or ``base@N`` (N convolutions kept in
    float32; 0 without ``@N``); ``bases`` maps each accepted base to whether it needs ``@N``.

    Raises:
        ValueError: the base is not accepted, N is not a whole number >= 0, or a base that
            needs ``@N`` has none.
    """
    base, at, convs = name.partition("@")
    if base not in bases or (at and not convs.isdigit()) or (bases[base] and not at):
        forms = ", ".join(f"{b}@N" if needs else f"{b}, {b}@N" for b, needs in bases.items())
        raise ValueError(f"expected {forms} (N >= 0), got {name!r}")
    return base, int(convs or 0)


def openvino_int8_segmenter(package: Path, data_dir: Path, work: Path, threads: int, name: str,
                            ebc_skip: int, tile: int = 512):
    """A segmenter whose runtime is the package's exported graph quantised to int8 by NNCF
    (``nncf.quantize``, preset MIXED: int8 weights per channel, symmetric; activations
    asymmetric) and run by OpenVINO, fed uint8 tiles like the worker's ``openvino``; for this
    measurement only. ``name``: ``openvino-int8`` (every convolution quantised),
    ``openvino-int8@N`` (the first N convolutions left in float32, as ``openvino-bf16@N``), or
    ``openvino-int8-ac@N`` (``nncf.quantize_with_accuracy_control``: from that start, the
    quantised operations are ranked by the labels they change on the validation tiles and
    returned to float32 until at most :data:`INT8_MAX_DROP` of the validation pixels differ
    from OpenVINO float32's labels; minutes on 2 cores). Tiles: :func:`int8_tiles`.

    Raises:
        ValueError: ``name`` is none of these, or N is not a whole number >= 0.
        ImportError: NNCF is not installed (``pip install 'pelletseg[bench]'``).
    """
    import nncf
    import openvino as ov

    from worker.engine.exported import exported_graph
    from worker.engine.runtimes import CONVOLUTIONS, OpenVinoRuntime
    from worker.engine.segmenter import Segmenter

    base, convs = candidate(name, {OPENVINO_INT8: False, OPENVINO_INT8_AC: True})
    seg = Segmenter(package, device="cpu", threads=threads, runtime="openvino",
                    cpu_precision="f32", cache_dir=work / "exported")
    # the graph the segmenter has just checked or exported: no network is built for it here
    model = ov.Core().read_model(str(exported_graph(lambda: seg.model, seg.package,
                                                    work / "exported", folded=True)))
    kept = [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in CONVOLUTIONS][:convs]
    calibration, validation = int8_tiles(data_dir, seg, ebc_skip, tile)
    common = {"preset": nncf.QuantizationPreset.MIXED, "subset_size": len(calibration),
              "ignored_scope": nncf.IgnoredScope(names=kept)}
    if base == OPENVINO_INT8:
        quantised = nncf.quantize(model, nncf.Dataset(calibration), fast_bias_correction=True,
                                  **common)
    else:
        reference = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        labels = [np.asarray(reference(v)[0]).argmax(1) for v in validation]

        def share_equal(compiled, items) -> float:
            """Share of validation pixels whose label equals float32's."""
            equal = total = 0
            for i in items:
                mine = np.asarray(compiled(validation[i])[0]).argmax(1)
                equal, total = equal + int((mine == labels[i]).sum()), total + mine.size
            return equal / total

        quantised = nncf.quantize_with_accuracy_control(
            model, calibration_dataset=nncf.Dataset(calibration),
            validation_dataset=nncf.Dataset(list(range(len(validation)))),
            validation_fn=share_equal, max_drop=INT8_MAX_DROP,
            drop_type=nncf.DropType.ABSOLUTE, **common)
    xml = work / "int8" / f"{name.replace('@', '-')}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantised, str(xml), compress_to_fp16=False)
    seg.runtime = OpenVinoRuntime(xml, threads, normalisation=seg.runtime.uint8_normalisation)
    seg.runtime.name = name
    seg.runtime.int8_convolutions = int8_convolutions(quantised)
    return seg


def int8_convolutions(model) -> tuple[int, int]:
    """(convolutions with int8 weights, all convolutions) of an ``openvino.Model`` quantised
    by NNCF: a convolution's weights are int8 when an int8 (or uint8) ``Constant`` feeds its
    weights input (through their dequantisation: ``Convert``, ``Subtract``, ``Multiply``) or
    a ``FakeQuantize`` does (NNCF leaves the depthwise convolutions' weights so)."""
    from worker.engine.runtimes import CONVOLUTIONS

    def int8(node, depth: int = 6) -> bool:
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_type_name() == "Constant":
            return node.get_element_type().get_type_name() in ("i8", "u8")
        return depth > 0 and any(int8(node.input_value(k).get_node(), depth - 1)
                                 for k in range(node.get_input_size()))

    convs = [op for op in model.get_ordered_ops() if op.get_type_name() in CONVOLUTIONS]
    return sum(int8(op.input_value(1).get_node()) for op in convs), len(convs)


def int8_segmenter(package: Path, data_dir: Path, work: Path, threads: int):
    """An eager segmenter whose runtime is the statically quantised graph (see the module
    docstring); for this measurement only."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from worker.engine.exported import exported_graph
    from worker.engine.runtimes import OnnxRuntime
    from worker.engine.segmenter import Segmenter

    seg = Segmenter(package, device="cpu", threads=threads)
    graph = exported_graph(seg.model, seg.package, work / "exported", folded=True)
    pre, quant = work / "int8-pre.onnx", work / "int8.onnx"
    quant_pre_process(str(graph), str(pre))
    tiles = iter(calibration_tiles(data_dir, seg))

    class Reader(CalibrationDataReader):
        def get_next(self):
            x = next(tiles, None)
            return None if x is None else {"tiles": x}

    quantize_static(str(pre), str(quant), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    runtime = OnnxRuntime(quant, threads, seg.device)
    runtime.name = INT8
    seg.runtime, seg.channels_last = runtime, False
    return seg


def openvino_bf16_segmenter(package: Path, work: Path, threads: int, name: str = OPENVINO_BF16):
    """A segmenter whose runtime is OpenVINO with bfloat16 inference precision, ``name``
    ``openvino-bf16`` (every layer) or ``openvino-bf16@N`` (the first N convolutions in
    float32; see the module docstring); for this measurement only.

    Raises:
        ValueError: ``name`` is neither, or N is not a whole number >= 0 or exceeds the
            graph's convolutions.
    """
    from worker.engine.segmenter import Segmenter

    _, convs = candidate(name, {OPENVINO_BF16: False})
    seg = Segmenter(package, device="cpu", threads=threads, runtime="openvino",
                    cpu_precision="bf16", cpu_f32_convs=convs,
                    cache_dir=work / "exported")
    seg.runtime.name = name
    return seg


def tile_rate(segmenter, image: np.ndarray, geometry: TileGeometry, seconds: float) -> float:
    """Model-only output Mpx/s of ``segmenter`` at ``geometry``: real tiles of ``image`` (4,
    along its diagonal, cycled, batch 1) through :meth:`Segmenter.labels_on_device`, after
    one warm-up tile, for at least ``seconds`` and 3 tiles; each tile yields stride^2 px."""
    import torch

    from benchmarks.limit import _sync, tile_batches

    t, device = geometry.tile_size, segmenter.device
    xs = [torch.from_numpy(np.ascontiguousarray(b)).to(device)
          for b in tile_batches(image, t, 1, tiles=4)]
    segmenter.labels_on_device(xs[0])
    _sync(device)
    done, started = 0, time.perf_counter()
    while done < 3 or time.perf_counter() - started < seconds:
        segmenter.labels_on_device(xs[done % len(xs)])
        done += 1
    _sync(device)
    return done * geometry.stride ** 2 / 1e6 / (time.perf_counter() - started)


def _pct(a: np.ndarray, b: np.ndarray) -> float:
    return 100.0 * float((a == b).mean())


def _pooled(rows: list[dict], key: str) -> dict:
    """Per data set: minimum and pixel-weighted mean of ``key`` over its images."""
    out = {}
    for ds in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == ds]
        px = [r["pixels"] for r in mine]
        out[ds] = {"min_pct": min(r[key] for r in mine),
                   "pooled_pct": sum(r[key] * p for r, p in zip(mine, px, strict=True)) / sum(px)}
    return out


def run(package: Path, data_dir: Path, geometries: list[TileGeometry], runtimes: list[str],
        runtime_geometries: list[TileGeometry], work: Path, *, threads: int = 1,
        speed_seconds: float = 6.0, lumenstone: int = 6, ebc_mosaics: int = 3,
        device: str = "cpu", precision: str = "fp32", edge_tiles: tuple[str, ...] = ("fitted",),
        say: Say = print) -> dict:
    """Measure geometry and runtime agreement (see the module docstring).

    Args:
        package: Model package folder.
        data_dir: ``../shared/data``.
        geometries: Geometries of the seam sweep (eager fp32).
        runtimes: Runtimes compared with eager (``eager`` itself is the reference; ``auto``
            is not accepted; the candidates :data:`INT8`, ``openvino-bf16[@N]``,
            ``openvino-int8[@N]`` and ``openvino-int8-ac@N`` allowed).
        runtime_geometries: Geometries at which the runtimes are compared.
        work: Scratch folder (exported graphs).
        threads: Threads of each segmenter (speeds are per this many threads).
        speed_seconds: Duration of each :func:`tile_rate` (0: no speeds).
        device: Where everything runs; the reference is always eager float32 there.
        precision: Autocast of the compared runtimes on CUDA (``bf16``, ``fp16``, ``fp32``;
            CPU is float32): with ``bf16``, ``eager`` in ``runtimes`` is eager bf16.
        edge_tiles: Edge-tile layouts of the geometry sweep (``fitted``, ``whole``); the
            runtimes are compared in the first.

    Returns:
        ``{"images", "geometry": [...], "runtimes": [...]}``, every figure in % of pixels or
        Mpx/s.
    """
    from benchmarks.config import load_average
    from worker.engine.segmenter import Segmenter

    images = real_images(data_dir, lumenstone, ebc_mosaics)
    say(f"{len(images)} images; load {load_average()}")
    eager = Segmenter(package, device=device, threads=threads, precision="fp32")
    doc: dict = {"package": str(package), "threads": threads, "load_average_start": load_average(),
                 "device": str(eager.device), "precision": precision,
                 "images": [{"dataset": d, "name": n, "width": a.shape[1], "height": a.shape[0]}
                            for d, n, a in images],
                 "edge_tiles": list(edge_tiles), "geometry": [], "runtimes": []}
    single: dict[tuple[str, int], np.ndarray] = {}
    tiled: dict[tuple[str, TileGeometry], np.ndarray] = {}
    for geometry, layout in [(g, e) for g in dict.fromkeys(geometries + runtime_geometries)
                             for e in edge_tiles]:
        fit = layout == "fitted"
        rows = []
        for ds, name, image in images:
            if (name, geometry.halo) not in single:
                single[name, geometry.halo] = eager.segment_single_pass(image, pad=geometry.halo)
            labels = eager.segment_array(image, geometry, batch_size=1, fit_edges=fit)
            if layout == edge_tiles[0]:
                tiled[name, geometry] = labels
            grid = eager.grid(image.shape[1], image.shape[0], geometry, fit_edges=fit)
            rows.append({"dataset": ds, "name": name, "pixels": labels.size,
                         "equal_pct": _pct(labels, single[name, geometry.halo]),
                         "model_px_per_px": grid.tile_pixels / labels.size})
        entry = {"tile_size": geometry.tile_size, "halo": geometry.halo,
                 "stride": geometry.stride, "overlap_cost": geometry.overlap_cost,
                 "edge_tiles": layout, "pellet_cost": pellet_cost(geometry, fit_edges=fit),
                 "images": rows, "datasets": _pooled(rows, "equal_pct"),
                 "sweep": geometry in geometries}
        say(f"geometry {geometry} ({layout} edge tiles): " + ", ".join(
            f"{ds} min {v['min_pct']:.3f} % pooled {v['pooled_pct']:.3f} %"
            for ds, v in entry["datasets"].items()))
        doc["geometry"].append(entry)
    segmenters = {}
    for name in runtimes:
        say(f"runtime {name} ...")
        if name == "eager" and (eager.device.type == "cpu" or precision == "fp32"):
            segmenters[name] = eager
        elif name == INT8:
            segmenters[name] = int8_segmenter(package, data_dir, work, threads)
        elif name.partition("@")[0] == OPENVINO_BF16:
            segmenters[name] = openvino_bf16_segmenter(package, work, threads, name)
        elif name.partition("@")[0] in (OPENVINO_INT8, OPENVINO_INT8_AC):
            segmenters[name] = openvino_int8_segmenter(package, data_dir, work, threads, name,
                                                       ebc_skip=4 * ebc_mosaics)
        else:
            segmenters[name] = Segmenter(package, device=device, threads=threads, runtime=name,
                                         precision=precision, cache_dir=work / "exported")
    for name, seg in segmenters.items():
        for geometry in runtime_geometries:
            rows = []
            started = time.perf_counter()
            for ds, img_name, image in images:
                labels = seg.segment_array(image, geometry, batch_size=1,
                                           fit_edges=edge_tiles[0] == "fitted")
                rows.append({"dataset": ds, "name": img_name, "pixels": labels.size,
                             "vs_eager_tiled_pct": _pct(labels, tiled[img_name, geometry]),
                             "vs_whole_image_pct": _pct(labels, single[img_name, geometry.halo])})
            entry = {"runtime": name, "tile_size": geometry.tile_size, "halo": geometry.halo,
                     "edge_tiles": edge_tiles[0], "images": rows, "seconds": time.perf_counter() - started,
                     "int8_convolutions": getattr(seg.runtime, "int8_convolutions", None),
                     "vs_eager_tiled": _pooled(rows, "vs_eager_tiled_pct"),
                     "vs_whole_image": _pooled(rows, "vs_whole_image_pct")}
            say(f"runtime {name} at {geometry}: vs eager tiled " + ", ".join(
                f"{ds} min {v['min_pct']:.3f} %" for ds, v in entry["vs_eager_tiled"].items()))
            doc["runtimes"].append(entry)
    if speed_seconds > 0:
        probe = images[0][2]
        speeds: dict[TileGeometry, dict[str, float]] = {}  # whole tiles: the same per layout
        for entry in doc["geometry"]:
            geometry = TileGeometry(entry["tile_size"], entry["halo"])
            if geometry not in speeds:
                speeds[geometry] = {name: tile_rate(seg, probe, geometry, speed_seconds)
                                    for name, seg in segmenters.items()}
            entry["output_mpx_s"] = dict(speeds[geometry])
            say(f"speed {geometry}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in entry["output_mpx_s"].items()) + " Mpx/s of output")
    doc["load_average_end"] = load_average()
    return doc


#: Largest tile chosen by :func:`choose` (px): a worker at 2560 px peaked at 2.2 GiB RSS on
#: this CPU, above the 2 GiB a worker may use (issue 6); 1792 px peaked at 1.6 GiB.
MAX_TILE_SIZE = 1792


def choose(doc: dict, runtime: str, threshold_pct: float = 99.9,
           max_tile_size: int = MAX_TILE_SIZE) -> dict | None:
    """The sweep geometry with the highest measured output Mpx/s for ``runtime`` among those
    of at most ``max_tile_size`` px whose tiled labels equal the whole-image labels on
    >= ``threshold_pct`` % of pixels in every image of every data set, in the first edge-tile
    layout measured (None if none qualifies or speeds were not measured)."""
    layout = doc.get("edge_tiles", ["whole"])[0]
    ok = [g for g in doc["geometry"] if g["sweep"] and runtime in g.get("output_mpx_s", {})
          and g.get("edge_tiles", "whole") == layout and g["tile_size"] <= max_tile_size
          and all(r["equal_pct"] >= threshold_pct for r in g["images"])]
    return max(ok, key=lambda g: g["output_mpx_s"][runtime], default=None)


def _cost(entry: dict, dataset: str) -> str:
    """Model pixels per output pixel over a data set's images (pixel-weighted), or '-'."""
    rows = [r for r in entry["images"] if r["dataset"] == dataset and "model_px_per_px" in r]
    if not rows:
        return "-"
    return f"{sum(r['model_px_per_px'] * r['pixels'] for r in rows) / sum(r['pixels'] for r in rows):.3f}"


def markdown(doc: dict) -> str:
    """The result as Markdown tables (geometry sweep, runtimes)."""
    datasets = sorted({i["dataset"] for i in doc["images"]})
    names = sorted({n for g in doc["geometry"] for n in g.get("output_mpx_s", {})})
    lines = [f"# pelletseg agreement ({doc.get('date_utc', '')})", "",
             f"- Package: {doc['package']}; {doc['threads']} thread(s) per segmenter; load "
             f"average {doc['load_average_start']} -> {doc['load_average_end']}",
             f"- Images: {len(doc['images'])} ("
             + ", ".join(f"{sum(i['dataset'] == d for i in doc['images'])} {d}" for d in datasets)
             + ")", "",
             "| T / halo | edge tiles | stride | (T/stride)^2 | cost on the 346 Mpx pellet | "
             + " | ".join(f"{d}: min / pooled % equal to whole image | {d}: cost"
                          for d in datasets)
             + "".join(f" | {n} Mpx/s" for n in names) + " |",
             "|---" * (5 + 2 * len(datasets) + len(names)) + "|"]
    for g in doc["geometry"]:
        cells = [f"{g['datasets'][d]['min_pct']:.3f} / {g['datasets'][d]['pooled_pct']:.3f} | "
                 + _cost(g, d) for d in datasets]
        speeds = [f"{g['output_mpx_s'][n]:.3f}" if n in g.get("output_mpx_s", {}) else "-"
                  for n in names]
        lines.append(f"| {g['tile_size']} / {g['halo']} | {g.get('edge_tiles', 'whole')} | "
                     f"{g['stride']} | "
                     f"{g['overlap_cost']:.3f} | {g['pellet_cost']:.3f} | "
                     + " | ".join(cells + speeds) + " |")
    lines += ["", "| runtime | T / halo | " + " | ".join(
        f"{d}: min / pooled % equal to eager tiled | {d}: min % equal to whole image"
        for d in datasets) + " | seconds |", "|---" * (3 + 2 * len(datasets)) + "|"]
    for r in doc["runtimes"]:
        cells = []
        for d in datasets:
            v, w = r["vs_eager_tiled"][d], r["vs_whole_image"][d]
            cells += [f"{v['min_pct']:.4f} / {v['pooled_pct']:.4f}", f"{w['min_pct']:.3f}"]
        int8 = r.get("int8_convolutions")
        named = r["runtime"] + (f" ({int8[0]}/{int8[1]} convolutions int8)" if int8 else "")
        lines.append(f"| {named} | {r['tile_size']} / {r['halo']} | "
                     + " | ".join(cells) + f" | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
