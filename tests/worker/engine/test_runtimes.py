"""Inference runtimes: the exported graph is a checked, cached artefact of a model package, and
every runtime gives eager fp32's labels through the one tiled path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.geometry import TileGeometry
from core.settings import Settings
from imaging.reading import open_image, read_rows
from models.package import ModelPackage, read_package
from tests.worker.conftest import DEMO_DATA
from worker.engine.exported import GRAPH_FILE, MANIFEST_FILE, ExportError, exported_graph
from worker.engine.runtimes import (
    RUNTIMES,
    EagerRuntime,
    RuntimeUnavailable,
    make_runtime,
    resolve_runtime,
)
from worker.engine.segmenter import Segmenter

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def crop():
    src = sorted(DEMO_DATA.glob("*.png"))[1]
    return read_rows(open_image(src, max_pixels=10**9), 0, 300)[:, :420]


@pytest.fixture(scope="module")
def eager(tiny_package):
    return Segmenter(tiny_package, device="cpu", threads=1)


def _graph(eager, cache):
    return exported_graph(eager.model, eager.package, cache, folded=True)


def test_exported_graph_is_cached_per_weights_and_checked(eager, tmp_path, capsys):
    graph = _graph(eager, tmp_path)
    assert graph.name == GRAPH_FILE and graph.is_relative_to(tmp_path / eager.package.weights_sha256)
    manifest = json.loads((graph.parent / MANIFEST_FILE).read_text())
    assert manifest["weights_sha256"] == eager.package.weights_sha256
    assert manifest["recipe"]["batchnorm_folded"] is True and len(manifest["sha256"]) == 64
    mtime = graph.stat().st_mtime_ns
    assert _graph(eager, tmp_path) == graph and graph.stat().st_mtime_ns == mtime  # reused
    # another recipe (batch norms not folded) is another artefact, not the same file
    other = exported_graph(eager.model, eager.package, tmp_path, folded=False)
    assert other != graph and other.parent.parent == graph.parent.parent


def test_a_corrupt_or_missing_graph_is_rebuilt_never_used(eager, tmp_path):
    graph = _graph(eager, tmp_path)
    good = graph.read_bytes()
    graph.write_bytes(good[:-100] + b"\0" * 100)  # same size, other bytes: a corrupt copy
    assert _graph(eager, tmp_path).read_bytes() == good
    graph.unlink()
    assert _graph(eager, tmp_path).read_bytes() == good
    # a manifest that names other weights is not trusted either
    manifest = graph.parent / MANIFEST_FILE
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "weights_sha256": "0" * 64}))
    _graph(eager, tmp_path)
    assert json.loads(manifest.read_text())["weights_sha256"] == eager.package.weights_sha256


def test_an_export_that_fails_says_which_model(eager, tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("no graph here")

    with pytest.raises(ExportError, match=f"model {eager.package.name} .*no graph here"):
        exported_graph(Broken().eval(), eager.package, tmp_path, folded=True)
    assert not list(tmp_path.rglob("*.onnx"))  # nothing half-written left to trust


def test_resolve_runtime():
    assert resolve_runtime("eager", CPU) == "eager"
    assert resolve_runtime("auto", torch.device("cuda")) == "eager"
    import importlib.util

    want = "openvino" if importlib.util.find_spec("openvino") else "eager"
    assert resolve_runtime("auto", CPU) == want
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("int8", CPU)
    assert set(RUNTIMES) >= {"auto", "eager", "compile", "openvino", "onnxruntime", "tensorrt"}


def test_unavailable_runtimes_are_refused_when_named_and_fall_back_under_auto(eager, tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(RuntimeUnavailable, match="tensorrt needs a CUDA device"):
        make_runtime("tensorrt", eager.model, eager.package, CPU, threads=1,
                     cache_dir=tmp_path, folded=True)
    with pytest.raises(RuntimeUnavailable, match="CPU only"):
        make_runtime("openvino", eager.model, eager.package, torch.device("cuda"), threads=1,
                     cache_dir=tmp_path, folded=True)


def test_auto_falls_back_to_eager_when_openvino_is_missing(eager, tmp_path, monkeypatch):
    import worker.engine.runtimes as rt

    def missing(*a, **k):
        raise RuntimeUnavailable("openvino is not installed")

    monkeypatch.setattr(rt, "resolve_runtime", lambda name, device: "openvino")
    monkeypatch.setattr(rt, "_make", missing)
    runtime = make_runtime("auto", eager.model, eager.package, CPU, threads=1,
                           cache_dir=tmp_path, folded=True)
    assert isinstance(runtime, EagerRuntime) and runtime.name == "eager"
    with pytest.raises(RuntimeUnavailable):
        make_runtime("openvino", eager.model, eager.package, CPU, threads=1,
                     cache_dir=tmp_path, folded=True)


@pytest.mark.parametrize("name", ["openvino", "onnxruntime"])
def test_runtime_labels_equal_eager_fp32(name, tiny_package, eager, crop, tmp_path):
    pytest.importorskip(name)
    seg = Segmenter(tiny_package, device="cpu", threads=1, runtime=name, cache_dir=tmp_path)
    assert seg.runtime.name == name and seg.channels_last is False
    assert list(tmp_path.rglob(GRAPH_FILE))  # through the cached, checked graph
    x = seg.normalise(torch.from_numpy(np.ascontiguousarray(crop[None, :128, :128])))
    with torch.inference_mode():
        want = eager.model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(seg.runtime(x), want, rtol=1e-3, atol=1e-3)
    geometry = TileGeometry(128, 16)
    ours, ref = seg.segment_array(crop, geometry), eager.segment_array(crop, geometry)
    assert ours.shape == ref.shape == crop.shape[:2]
    # a random-init network's logits have near ties; float rounding may flip a few of them
    assert (ours == ref).mean() >= 0.999
    # the one tiled path: pipelined labels equal the simple path's, with this runtime too
    grid_labels = seg.segment_array(crop, geometry, batch_size=3)
    np.testing.assert_array_equal(grid_labels, ours)


@pytest.mark.parametrize("name", ["openvino", "onnxruntime"])
def test_a_cached_graph_runs_without_building_the_network(name, tiny_package, eager, crop,
                                                          tmp_path, monkeypatch):
    """A segmenter over an exported graph builds the PyTorch network (and imports
    segmentation_models_pytorch) only to export it: a worker whose graph is in the cache
    starts without it, with the same labels; ``.model`` still gives the network on demand."""
    pytest.importorskip(name)
    import worker.engine.segmenter as segmenter_module

    built = []
    real = segmenter_module.build_model
    monkeypatch.setattr(segmenter_module, "build_model", lambda pkg: built.append(1) or real(pkg))
    first = Segmenter(tiny_package, device="cpu", threads=1, runtime=name, cache_dir=tmp_path)
    assert len(built) == 1  # exported now: the network was needed
    again = Segmenter(tiny_package, device="cpu", threads=1, runtime=name, cache_dir=tmp_path)
    assert len(built) == 1 and again.runtime.name == name  # from the cache: not built
    geometry = TileGeometry(128, 16)
    np.testing.assert_array_equal(again.segment_array(crop, geometry),
                                  first.segment_array(crop, geometry))
    model = again.model  # on demand, prepared as before (eval mode, on the device)
    assert len(built) == 2 and not model.training and again.model is model
    with torch.inference_mode():
        x = again.normalise(torch.from_numpy(np.ascontiguousarray(crop[None, :128, :128])))
        torch.testing.assert_close(model(x), eager.model(x), rtol=1e-4, atol=1e-4)
    # the eager runtime needs the network at once
    Segmenter(tiny_package, device="cpu", threads=1, runtime="eager")
    assert len(built) == 3


def test_the_worker_uses_the_runtime_setting(tiny_package, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from worker.stages.segmenting import segmenter_for

    pytest.importorskip("openvino")
    pkg = read_package(tiny_package)
    monkeypatch.delenv("PELLETSEG_EXPORT_CACHE_DIR")  # the suite's shared folder
    settings = Settings(home=tmp_path, runtime="openvino", device="cpu", torch_threads=1)
    assert settings.resolved_export_cache_dir == tmp_path / "cache" / "exported"
    graphs = tmp_path / "graphs"  # PELLETSEG_EXPORT_CACHE_DIR: where the worker exports
    settings = Settings(home=tmp_path, runtime="openvino", device="cpu", torch_threads=1,
                        export_cache_dir=graphs)
    ctx = SimpleNamespace(settings=settings, segmenters={},
                          models=SimpleNamespace(fetch=lambda *key: tiny_package))
    job = SimpleNamespace(model_name=pkg.name, model_version=pkg.version,
                          model_sha256=pkg.weights_sha256, spec=_spec(pkg))
    seg = segmenter_for(ctx, job)
    assert seg.runtime.name == "openvino"
    assert list((graphs / pkg.weights_sha256).rglob(GRAPH_FILE))
    assert not (tmp_path / "cache" / "exported").exists()
    assert segmenter_for(ctx, job) is seg
    assert Settings().runtime == "auto"
    with pytest.raises(ValueError):
        Settings(runtime="int8")


def _spec(pkg, precision=None) -> dict:
    """A stored job spec for ``pkg`` (what ``jobs.spec`` holds)."""
    from core.spec import JobSpec

    return JobSpec(source_url="file:///x.tif", model=pkg.name, model_version=pkg.version,
                   tile_size=pkg.tile_size, halo=pkg.halo, precision=precision).model_dump()


def test_a_job_that_names_a_precision_gets_it_on_every_worker(tiny_package, tmp_path,
                                                              monkeypatch):
    """JobSpec.precision overrides the worker's PELLETSEG_PRECISION for that job's rows: on a
    CPU with bfloat16 units a package validated for bf16 is served in bf16 to the jobs that
    leave it to the worker and in float32 to a job that pins fp32, from two cached
    segmenters; the pinning job's record says f32."""
    from types import SimpleNamespace

    from worker.stages.segmenting import segmenter_for

    pytest.importorskip("openvino")
    import worker.engine.runtimes as rt

    folder = _with_cpu_precision(tiny_package, tmp_path / "bf16", "bf16")
    pkg = read_package(folder)
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: True)
    settings = Settings(home=tmp_path, runtime="openvino", device="cpu", torch_threads=1)
    assert settings.precision == "bf16"
    ctx = SimpleNamespace(settings=settings, segmenters={},
                          models=SimpleNamespace(fetch=lambda *key: folder))

    def job(precision):
        return SimpleNamespace(model_name=pkg.name, model_version=pkg.version,
                               model_sha256=pkg.weights_sha256, spec=_spec(pkg, precision))

    default, pinned = segmenter_for(ctx, job(None)), segmenter_for(ctx, job("fp32"))
    assert default.inference["precision"] == "bf16"
    assert pinned.inference["precision"] == "f32" and pinned.inference["f32_convs"] == 0
    assert default is not pinned and len(ctx.segmenters) == 2
    assert segmenter_for(ctx, job("fp32")) is pinned
    assert segmenter_for(ctx, job("bf16")) is default  # what the worker would use anyway
    # a worker set to fp32 serves a job that asks bf16 in bf16
    ctx32 = SimpleNamespace(settings=settings.model_copy(update={"precision": "fp32"}),
                            segmenters={}, models=ctx.models)
    assert segmenter_for(ctx32, job(None)).inference["precision"] == "f32"
    assert segmenter_for(ctx32, job("bf16")).inference["precision"] == "bf16"


def test_torch_compile_setting_keeps_its_meaning_unless_a_runtime_is_named(tiny_package, tmp_path):
    # torch.compile is lazy: building the segmenter compiles nothing
    assert Segmenter(tiny_package, device="cpu", compile=True).runtime.name == "compile"
    assert Segmenter(tiny_package, device="cpu", compile=True, runtime="auto").runtime.name == "compile"
    assert Segmenter(tiny_package, device="cpu", runtime="eager").runtime.name == "eager"
    pytest.importorskip("onnxruntime")
    named = Segmenter(tiny_package, device="cpu", compile=True, runtime="onnxruntime",
                      cache_dir=tmp_path)
    assert named.runtime.name == "onnxruntime"


def test_openvino_normalises_raw_tiles_inside_its_graph(tiny_package, crop, tmp_path):
    """The uint8 path (normalisation compiled into OpenVINO's graph) gives the float path's
    logits and labels; the segmenter takes it at input scale 1 without flips, only."""
    pytest.importorskip("openvino")
    seg = Segmenter(tiny_package, device="cpu", threads=1, runtime="openvino", cache_dir=tmp_path)
    mean, std = seg.runtime.uint8_normalisation
    norm = seg.package.normalisation
    assert mean == pytest.approx([m * 255 for m in norm.mean])
    assert std == pytest.approx([v * 255 for v in norm.std])
    tiles = torch.from_numpy(np.ascontiguousarray(crop[None, :128, :128]))
    with torch.inference_mode():
        want = seg.runtime(seg.normalise(tiles))
        got = seg.runtime.from_uint8(tiles)
        assert torch.equal(seg.logits(tiles), got)  # the segmenter's path is the uint8 one
    assert got.shape == want.shape == (1, seg.package.n_classes, 128, 128)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (Segmenter.labels_of(got) == Segmenter.labels_of(want)).float().mean() >= 0.999
    assert ((1, 128, 128, 3), True) in seg.runtime._requests
    # the tiled path goes through it too (a new tile shape compiles a uint8 request)
    seg.segment_array(crop, TileGeometry(96, 16))
    assert ((1, 96, 96, 3), True) in seg.runtime._requests
    with pytest.raises(ValueError, match="uint8 tiles"):
        seg.runtime.from_uint8(tiles.float())
    # flips and reduced input scales keep the float path: they work on normalised tiles
    flips = Segmenter(tiny_package, device="cpu", threads=1, runtime="openvino",
                      cache_dir=tmp_path, tta="flips")
    with torch.inference_mode():
        flips.logits(tiles)
    assert not any(uint8 for _, uint8 in flips.runtime._requests)
    # runtimes without such a graph say so
    eager = Segmenter(tiny_package, device="cpu", threads=1)
    assert eager.runtime.uint8_normalisation is None
    with pytest.raises(NotImplementedError, match="normalised float32 tiles only"):
        eager.runtime.from_uint8(tiles)
    from worker.engine.runtimes import OpenVinoRuntime

    with pytest.raises(ValueError, match="positive stds"):
        OpenVinoRuntime(_graph(eager, tmp_path), 1, normalisation=([0, 0, 0], [1, 0, 1]))


@pytest.mark.parametrize("scale, side", [(0.5, 640), (0.25, 384), (0.25, 128)])
def test_reduced_scale_labels_by_blocks_equal_the_whole_tiles(scale, side, tiny_package, tmp_path):
    """At input scale 1/f the CPU interpolates and decides DECIDE_ROWS rows at a time: the
    same labels and confidence, bit for bit, as deciding the whole tiles' logits, with a last
    partial block and with tiles that fit one block."""
    import shutil

    from models.package import MODEL_JSON
    from worker.engine.segmenter import DECIDE_ROWS

    folder = tmp_path / "scaled"
    shutil.copytree(tiny_package, folder)
    meta = json.loads((folder / MODEL_JSON).read_text())
    (folder / MODEL_JSON).write_text(json.dumps({**meta, "input_scale": scale}))
    seg = Segmenter(folder, device="cpu", threads=1)
    g = torch.Generator().manual_seed(2)
    tiles = torch.randint(0, 256, (2, side, side, 3), dtype=torch.uint8, generator=g)
    with torch.inference_mode():
        want_labels, want_conf = seg.decide(seg.logits(tiles))
        labels, conf = seg.labels_and_confidence(tiles)
        alone, none = seg.labels_and_confidence(tiles, with_confidence=False)
        limit = seg.labels_on_device(tiles)
    assert (side > DECIDE_ROWS) == (side in (640, 384))
    assert labels.shape == conf.shape == (2, side, side) and none is None
    assert torch.equal(labels, want_labels) and torch.equal(conf, want_conf)
    assert torch.equal(alone, want_labels) and torch.equal(limit, want_labels)


@pytest.mark.parametrize("name", ["eager", "openvino"])
def test_flip_tta_averages_the_logits_of_the_four_flips(name, tiny_package, eager, crop,
                                                        tmp_path):
    pytest.importorskip(name if name != "eager" else "torch")
    seg = Segmenter(tiny_package, device="cpu", threads=1, runtime=name, cache_dir=tmp_path,
                    tta="flips")
    assert seg.tta == "flips" and eager.tta == read_package(tiny_package).tta == "none"
    x = seg.normalise(torch.from_numpy(np.ascontiguousarray(crop[None, :96, :128])))
    with torch.inference_mode():
        flips = [eager.model(x.flip(d).contiguous(memory_format=torch.channels_last)).flip(d)
                 if d else eager.model(x.contiguous(memory_format=torch.channels_last))
                 for d in ((), (-1,), (-2,), (-2, -1))]
        want = torch.stack(flips).mean(0)
        got = seg.forward(x)
    assert got.shape == want.shape == (1, read_package(tiny_package).n_classes, 96, 128)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    # a random-init network is not flip-equivariant: the averaged logits differ from one pass
    assert not torch.allclose(got, flips[0], atol=1e-3)
    # through the tiled path, with the confidence of the averaged logits
    geometry = TileGeometry(128, 16)
    labels, conf = seg.segment_array(crop, geometry, with_confidence=True)
    assert labels.shape == conf.shape == crop.shape[:2]
    with pytest.raises(ValueError, match="tta must be one of"):
        Segmenter(tiny_package, device="cpu", threads=1, tta="rotations")
    # the one list of kinds is the one model.json accepts
    from typing import get_args

    from models.package import TTA_KINDS
    assert get_args(ModelPackage.model_fields["tta"].annotation) == TTA_KINDS


@pytest.mark.parametrize("name", ["eager", "openvino"])
def test_input_scale_reduces_each_tile_and_brings_the_logits_back(name, tiny_package, eager,
                                                                  crop, tmp_path):
    import shutil

    import torch.nn.functional as F

    from models.package import MODEL_JSON

    pytest.importorskip(name if name != "eager" else "torch")
    folder = tmp_path / "half"
    shutil.copytree(tiny_package, folder)
    meta = json.loads((folder / MODEL_JSON).read_text())
    (folder / MODEL_JSON).write_text(json.dumps({**meta, "input_scale": 0.5}))
    seg = Segmenter(folder, device="cpu", threads=1, runtime=name, cache_dir=tmp_path)
    assert seg.package.input_scale == 0.5 and eager.package.input_scale == 1.0
    x = seg.normalise(torch.from_numpy(np.ascontiguousarray(crop[None, :128, :128])))
    with torch.inference_mode():
        small = F.avg_pool2d(x, 2)  # area averaging at 0.5: the mean of each 2 x 2 block
        want = F.interpolate(eager.model(small.contiguous(memory_format=torch.channels_last)),
                             size=(128, 128), mode="bilinear", align_corners=False)
        got = seg.forward(x)
        full = eager.forward(x)
    assert got.shape == full.shape == (1, read_package(folder).n_classes, 128, 128)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(got, full, atol=1e-3)  # the model really saw the reduced tile
    # raw tiles: reduced before they are normalised (the same logits up to float rounding)
    raw = torch.from_numpy(np.ascontiguousarray(crop[None, :128, :128]))
    with torch.inference_mode():
        from_raw = seg.logits(raw)
    torch.testing.assert_close(from_raw, got, rtol=1e-4, atol=1e-4)
    assert torch.equal(Segmenter.labels_of(from_raw), Segmenter.labels_of(got))
    # the tiled path at full resolution: labels and confidence of the image's shape
    labels, conf = seg.segment_array(crop, TileGeometry(128, 16), with_confidence=True)
    assert labels.shape == conf.shape == crop.shape[:2]
    if name == "openvino":  # reduced tiles are normalised floats: never the uint8 graph
        assert seg.runtime._requests and not any(u8 for _, u8 in seg.runtime._requests)
    with pytest.raises(ValueError, match=r"96 px tile at input scale 0\.5 is 48 model px, "
                                          r"not a multiple of 32"):
        seg.segment_array(crop, TileGeometry(96, 16))
    # the whole-image reference pads to a side the network takes at this scale (64 px at
    # 0.5): 300 + 2 x 16 = 332 px is padded to 384, not to 352 (176 model px, refused)
    single = seg.segment_single_pass(crop, pad=16)
    assert single.shape == crop.shape[:2] and single.dtype == np.uint8
    # a random-init network's labels depend on context, so tiles and the whole image agree
    # less than a trained one's (92.8 % here); a misplaced crop would fall near chance
    assert (single == labels).mean() > 0.8
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="input_scale"):
            ModelPackage.model_validate({**meta, "input_scale": bad})


def test_openvino_keeps_the_most_recently_used_compiled_shapes(tmp_path, tiny_package, crop,
                                                                monkeypatch):
    """Each image size brings its fitted edge tiles' shapes: a long-lived worker keeps the
    MAX_COMPILED_SHAPES most recently used compiled models, not one per size it ever saw."""
    pytest.importorskip("openvino")
    import worker.engine.runtimes as runtimes

    monkeypatch.setattr(runtimes, "MAX_COMPILED_SHAPES", 3)
    seg = Segmenter(tiny_package, device="cpu", threads=1, runtime="openvino", cache_dir=tmp_path)
    sizes = [(128, 128), (128, 160), (160, 128), (128, 128), (96, 96)]
    for h, w in sizes:
        with torch.inference_mode():
            labels = Segmenter.labels_of(seg.runtime.from_uint8(
                torch.from_numpy(np.ascontiguousarray(crop[None, :h, :w]))))
        assert labels.shape == (1, h, w)
    # (128, 160) was used longest ago: dropped when (96, 96) came; (128, 128) was used again
    assert [k[0][1:3] for k in seg.runtime._requests] == [(160, 128), (128, 128), (96, 96)]


def test_openvino_inference_precision_is_f32_unless_bf16_is_asked(eager, tmp_path, crop):
    pytest.importorskip("openvino")
    from worker.engine.runtimes import OpenVinoRuntime

    graph = _graph(eager, tmp_path)
    assert OpenVinoRuntime(graph, 1)._config["INFERENCE_PRECISION_HINT"] == "f32"
    bf16 = OpenVinoRuntime(graph, 1, inference_precision="bf16")
    assert bf16._config["INFERENCE_PRECISION_HINT"] == "bf16"
    with pytest.raises(ValueError, match="f32 or bf16"):
        OpenVinoRuntime(graph, 1, inference_precision="int8")
    # it runs (natively on AMX / AVX-512 BF16, else as OpenVINO decides) and gives logits of
    # the tile's shape, close to float32's (bfloat16 keeps ~3 significant digits)
    x = eager.normalise(torch.from_numpy(np.ascontiguousarray(crop[None, :64, :64])))
    ref = OpenVinoRuntime(graph, 1)(x.contiguous())
    out = bf16(x.contiguous())
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max().item() < 0.1 * max(1.0, ref.abs().max().item())


def _with_cpu_precision(package, folder, value, f32_convs: int = 0):
    """A copy of ``package`` whose model.json says ``cpu_precision: value`` and
    ``cpu_f32_convs: f32_convs`` (the weights, and so the sha256, are the same)."""
    import shutil

    shutil.copytree(package, folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "cpu_precision": value,
                                                   "cpu_f32_convs": f32_convs}))
    return folder


def test_a_package_is_served_in_bf16_only_where_validated_on_a_cpu_with_bf16_units(
        tiny_package, tmp_path, monkeypatch):
    import worker.engine.runtimes as rt

    f32_pkg = read_package(tiny_package)
    bf16_pkg = read_package(_with_cpu_precision(tiny_package, tmp_path / "bf16", "bf16"))
    assert f32_pkg.cpu_precision == "f32" and bf16_pkg.cpu_precision == "bf16"
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: True)
    assert rt.openvino_precision(bf16_pkg) == "bf16"
    assert rt.openvino_precision(bf16_pkg, "fp32") == "f32"  # PELLETSEG_PRECISION=fp32
    assert rt.openvino_precision(f32_pkg) == "f32"
    assert rt.openvino_precision(f32_pkg, cpu_precision="bf16") == "bf16"  # a measurement
    assert rt.openvino_precision(bf16_pkg, cpu_precision="f32") == "f32"
    with pytest.raises(ValueError, match="f32 or bf16"):
        rt.openvino_precision(f32_pkg, cpu_precision="int8")
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: False)
    assert rt.openvino_precision(bf16_pkg) == "f32"  # it would be emulated, not validated
    with pytest.raises(RuntimeUnavailable, match="needs a CPU with bfloat16 units"):
        rt.openvino_precision(f32_pkg, cpu_precision="bf16")
    with pytest.raises(ValueError):
        ModelPackage.model_validate({**f32_pkg.model_dump(), "cpu_precision": "fp16"})


def test_the_worker_serves_a_bf16_package_in_bf16_where_the_cpu_allows(
        tiny_package, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import worker.engine.runtimes as rt

    folder = _with_cpu_precision(tiny_package, tmp_path / "bf16", "bf16")
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: True)
    kw = {"device": "cpu", "threads": 1, "runtime": "openvino", "cache_dir": tmp_path / "c"}
    seg = Segmenter(folder, **kw)  # precision defaults to PELLETSEG_PRECISION's bf16
    assert seg.runtime.precision == "bf16"
    assert seg.runtime._config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert Segmenter(folder, precision="fp32", **kw).runtime.precision == "f32"
    assert Segmenter(tiny_package, **kw).runtime.precision == "f32"
    assert Segmenter(folder, device="cpu", runtime="eager").runtime.precision == "f32"
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: False)
    assert Segmenter(folder, **kw).runtime.precision == "f32"


def test_cpu_has_bf16_follows_openvinos_capabilities():
    ov = pytest.importorskip("openvino")
    from worker.engine.runtimes import cpu_has_bf16

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert cpu_has_bf16() is ("BF16" in caps)


def _three_convolutions():
    """An OpenVINO model: (1, 4, 16, 16) float32 -> conv -> relu -> grouped conv -> conv."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([1, 4, 16, 16], np.float32, name="x")
    w1 = ops.constant(rng.standard_normal((4, 4, 3, 3)).astype(np.float32))
    c1 = ops.relu(ops.convolution(x, w1, [1, 1], [1, 1], [1, 1], [1, 1]))
    w2 = ops.constant(rng.standard_normal((4, 1, 1, 3, 3)).astype(np.float32))
    c2 = ops.group_convolution(c1, w2, [1, 1], [1, 1], [1, 1], [1, 1])
    w3 = ops.constant(rng.standard_normal((2, 4, 1, 1)).astype(np.float32))
    c3 = ops.convolution(c2, w3, [1, 1], [0, 0], [0, 0], [1, 1])
    return ov.Model([c3], [x])


def test_float32_prefix_marks_the_operations_before_the_next_convolution():
    ov = pytest.importorskip("openvino")
    from worker.engine.runtimes import float32_prefix

    def marked(model):  # ops whose rt_info gained an entry, in topological order
        return [op.get_type_name() for op in model.get_ordered_ops()
                if op.get_type_name() not in ("Constant", "Parameter", "Result")
                and len(op.get_rt_info()) > len(plain[op.get_friendly_name()])]

    model = _three_convolutions()
    plain = {op.get_friendly_name(): dict(op.get_rt_info()) for op in model.get_ordered_ops()}
    assert marked(float32_prefix(model, 1)) == ["Convolution", "Relu"]
    assert marked(float32_prefix(model, 2)) == ["Convolution", "Relu", "GroupConvolution"]
    assert marked(float32_prefix(model, 3)) == ["Convolution", "Relu", "GroupConvolution",
                                                "Convolution"]
    with pytest.raises(ValueError, match="has 3 convolutions, fewer than the 4"):
        float32_prefix(model, 4)
    with pytest.raises(ValueError, match=">= 1"):
        float32_prefix(model, 0)
    # the weights travel with the marks: the same outputs in float32
    x = np.random.default_rng(1).standard_normal((1, 4, 16, 16)).astype(np.float32)
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    a = core.compile_model(model, "CPU", f32)({0: x})[0]
    b = core.compile_model(float32_prefix(model, 2), "CPU", f32)({0: x})[0]
    assert a.shape == (1, 2, 16, 16) and np.array_equal(a, b)


def test_a_cut_inside_a_residual_block_is_refused():
    """x -> conv1 -> relu -> conv2 -> (+ relu output) -> conv3: a cut after conv1 would leave
    the sum with one float32 and one bfloat16 input."""
    ov = pytest.importorskip("openvino")
    import openvino.opset13 as ops

    from worker.engine.runtimes import float32_cuts, float32_prefix

    rng = np.random.default_rng(0)

    def conv(x, cin, cout):
        w = ops.constant(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32))
        return ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])

    x = ops.parameter([1, 4, 8, 8], np.float32)
    a = ops.relu(conv(x, 4, 4))
    s = ops.add(conv(a, 4, 4), a)
    model = ov.Model([conv(s, 4, 2)], [x])
    assert float32_cuts(model) == [2, 3]
    with pytest.raises(ValueError, match=r"split a residual block.*nearest counts that do not: \[2\]"):
        float32_prefix(model, 1)
    assert len(float32_prefix(model, 2).get_ordered_ops()) == len(model.get_ordered_ops())


def test_the_marked_convolutions_compute_in_float32_under_bf16():
    ov = pytest.importorskip("openvino")
    from worker.engine.runtimes import cpu_has_bf16, float32_prefix

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bfloat16 units: OpenVINO computes everything in float32")

    def precisions(model):
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        return [op.get_rt_info()["runtimePrecision"].astype(str)
                for op in compiled.get_runtime_model().get_ordered_ops()
                if op.get_rt_info()["layerType"].astype(str) == "Convolution"]

    model = _three_convolutions()
    assert precisions(model) == ["bf16", "bf16", "bf16"]
    assert precisions(float32_prefix(model, 2)) == ["f32", "f32", "bf16"]


def test_a_bf16_package_keeps_its_leading_convolutions_in_float32(tiny_package, tmp_path,
                                                                   monkeypatch):
    pytest.importorskip("openvino")
    import worker.engine.runtimes as rt

    folder = _with_cpu_precision(tiny_package, tmp_path / "bf16", "bf16", f32_convs=5)
    assert read_package(folder).cpu_f32_convs == 5
    assert read_package(tiny_package).cpu_f32_convs == 0
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: True)
    kw = {"device": "cpu", "threads": 1, "runtime": "openvino", "cache_dir": tmp_path / "c"}
    assert Segmenter(folder, **kw).runtime.f32_convs == 5
    assert Segmenter(folder, cpu_f32_convs=6, **kw).runtime.f32_convs == 6  # a measurement
    assert Segmenter(folder, precision="fp32", **kw).runtime.f32_convs == 0  # all float32
    with pytest.raises(ValueError, match="fewer than the 100000"):
        Segmenter(folder, cpu_f32_convs=100000, **kw)
    cuts = Segmenter(folder, **kw).runtime.float32_cuts()
    inside = min(set(range(1, cuts[-1])) - set(cuts))  # a count that splits a residual block
    with pytest.raises(ValueError, match="split a residual block"):
        Segmenter(folder, cpu_f32_convs=inside, **kw)
    with pytest.raises(ValueError):
        ModelPackage.model_validate({**read_package(folder).model_dump(), "cpu_f32_convs": -1})
