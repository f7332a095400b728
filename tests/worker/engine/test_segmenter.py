"""The pipelined inference path: band reading with read-ahead, device plumbing, and labels
byte-identical to the simple path on CPU."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import pyvips
import torch

from core.geometry import TileGeometry
from core.settings import Settings
from imaging.reading import image_rows, open_image, read_rows
from imaging.stitching import read_strip, write_strip
from storage.blobs.layout import row_key
from tests.worker.conftest import DEMO_DATA
from worker.engine.devices import (
    AUTO_BATCH_MAX,
    PendingLabels,
    autocast_dtype,
    batch_from_memory,
    fold_batchnorm,
    set_cpu_threads,
)
from worker.engine.prefetch import Prefetcher, iter_bands, region_rows
from worker.engine.segmenter import Segmenter, network_side, serving_grid
from worker.engine.tiling import TileGrid, band_row_sources, pad_columns, strip_bands

# (width, height, tile, halo, rows_per_task): interior strips, images smaller than the halo
# (numpy reflects more than once), one-pixel images (edge padding), multi-row strips.
GEOMETRIES = [
    (300, 260, 64, 16, 1),
    (300, 260, 64, 16, 3),
    (97, 41, 64, 16, 2),
    (20, 7, 96, 32, 1),
    (1, 1, 64, 16, 1),
    (5, 1, 64, 16, 1),
    (130, 500, 128, 32, 4),
]


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("edge_pad", [None, 0, 3])
def test_bands_read_row_by_row_equal_the_strip_bands_in_memory(geometry, edge_pad):
    w, h, t, halo, rpt = geometry
    image = _image(h, w)
    grid = TileGrid(w, h, TileGeometry(t, halo), rpt, edge_pad=edge_pad)
    for y0, y1 in grid.all_strip_bounds():
        r0, r1 = grid.read_window(y0, y1)
        expected = strip_bands(image[r0:r1], grid, y0, y1)
        sources = band_row_sources(grid, y0, y1)
        assert all(r0 <= s.min() and s.max() < r1 for s in sources)  # inside the read window
        for src, band in zip(sources, expected, strict=True):
            np.testing.assert_array_equal(pad_columns(image[src], grid), band)
        bands = list(iter_bands(region_rows(image[r0:r1], r0), grid, y0, y1))
        assert len(bands) == len(expected)
        for band, ref in zip(bands, expected, strict=True):
            np.testing.assert_array_equal(band, ref)


def test_bands_read_each_image_row_once():
    image = _image(900, 120)
    grid = TileGrid(120, 900, TileGeometry(64, 16), rows_per_task=5)  # 5 bands sharing 32 rows each
    reads = []

    def rows(lo, hi):
        reads.append((lo, hi))
        return image[lo:hi]

    y0, y1 = grid.strip_bounds(1)
    r0, r1 = grid.read_window(y0, y1)
    assert len(list(iter_bands(rows, grid, y0, y1))) == 5
    assert sum(hi - lo for lo, hi in reads) == r1 - r0  # shared halo rows were not re-read
    assert reads[0][0] == r0 and reads[-1][1] == r1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(reads))


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetcher_keeps_order_and_counts_time(depth):
    with Prefetcher(iter(range(50)), depth) as items:
        assert list(items) == list(range(50))
        assert items.busy_s >= 0 and items.wait_s >= 0
        with pytest.raises(StopIteration):
            next(items)


@pytest.mark.parametrize("depth", [0, 2])
def test_prefetcher_raises_the_producers_error_in_order(depth):
    def produce():
        yield 1
        yield 2
        raise ValueError("row 3 is corrupt")

    with Prefetcher(produce(), depth) as items:
        assert next(items) == 1 and next(items) == 2
        with pytest.raises(ValueError, match="row 3 is corrupt"):
            next(items)


def test_prefetcher_closed_early_stops_its_thread():
    produced = []

    def produce():
        for i in range(10_000):
            produced.append(i)
            yield i

    items = Prefetcher(produce(), depth=2)
    assert next(items) == 0
    items.close()
    assert not items._thread.is_alive()
    assert len(produced) < 10  # stopped soon after the consumer, not at the end


def test_prefetcher_reads_ahead_while_the_consumer_works():
    started = threading.Event()

    def produce():
        yield 0
        started.set()  # only reached if the producer runs ahead of the consumer
        yield 1

    with Prefetcher(produce(), depth=2) as items:
        assert next(items) == 0
        assert started.wait(5)
        assert next(items) == 1


def test_batch_from_memory_and_precision():
    gib = 1024**3
    assert batch_from_memory(40 * gib, 1 * gib) == 20
    assert batch_from_memory(1 * gib, 4 * gib) == 1  # never below one tile
    assert batch_from_memory(80 * gib, 10_000) == AUTO_BATCH_MAX
    assert batch_from_memory(1 * gib, 0) == 1
    assert autocast_dtype(torch.device("cpu"), "bf16") is None  # CPU stays float32
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(torch.device("cpu"), "int8")


def test_cpu_thread_counts():
    before = torch.get_num_threads()
    try:
        set_cpu_threads(1)
        assert torch.get_num_threads() == 1
        assert torch.get_num_interop_threads() >= 1
    finally:
        torch.set_num_threads(before)


def _with_random_bn_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every batch norm non-trivial statistics (fresh ones are the identity map)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def test_fold_batchnorm_removes_every_norm_and_keeps_the_function():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = _with_random_bn_statistics(smp.create_model(
        "Unet", encoder_name="resnet18", encoder_weights=None, classes=4, encoder_depth=3,
        decoder_channels=[32, 16, 8]))
    folded = fold_batchnorm(model)
    assert folded is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # untouched
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = model(x), folded(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.999


def test_fold_batchnorm_leaves_an_untraceable_model_alone_and_refuses_training_mode():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.bn(self.conv(x))
            return x

    model = Branchy().eval()
    assert fold_batchnorm(model) is model
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(Branchy().train())


def test_segmenter_labels_with_and_without_folding_agree(tiny_package, crop):
    plain = Segmenter(tiny_package, device="cpu", threads=1, fold_bn=False)
    folded = Segmenter(tiny_package, device="cpu", threads=1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules())
    a = plain.segment_array(crop, TileGeometry(128, 16))
    b = folded.segment_array(crop, TileGeometry(128, 16))
    assert a.shape == b.shape == crop.shape[:2]
    assert (a == b).mean() > 0.999  # float rounding may flip a near-tie, nothing more


def test_pending_labels_on_cpu_are_final():
    labels = torch.arange(8, dtype=torch.uint8).view(2, 2, 2)
    np.testing.assert_array_equal(PendingLabels(labels).result(), labels.numpy())


@pytest.fixture(scope="module")
def segmenter(tiny_package):
    return Segmenter(tiny_package, device="cpu", threads=1)


@pytest.fixture(scope="module")
def crop():
    src = sorted(DEMO_DATA.glob("*.png"))[1]
    return read_rows(open_image(src, max_pixels=10**9), 0, 430)[:, :610]


@pytest.mark.parametrize(("tile", "halo", "rows_per_task", "batch"), [
    (128, 16, 1, 1), (128, 16, 1, 8), (128, 32, 3, 5), (96, 16, 2, 3),
])
def test_pipelined_labels_equal_the_simple_path_on_cpu(segmenter, crop, tile, halo,
                                                       rows_per_task, batch):
    grid = TileGrid(crop.shape[1], crop.shape[0], TileGeometry(tile, halo), rows_per_task)
    for y0, y1 in grid.all_strip_bounds():
        r0, r1 = grid.read_window(y0, y1)
        simple = segmenter.segment_strip_simple(crop[r0:r1], grid, y0, y1, batch)
        piped, stats = segmenter.segment_rows(region_rows(crop[r0:r1], r0), grid, y0, y1,
                                              batch, prefetch=2)
        assert simple.shape == (y1 - y0, crop.shape[1])
        assert np.array_equal(piped, simple), f"strip [{y0}, {y1}) differs"
        assert stats.tiles == len(grid.strip_tiles(y0, y1)) and stats.batch_size == batch
        np.testing.assert_array_equal(
            segmenter.segment_strip(crop[r0:r1], grid, y0, y1, batch), simple)


def test_pipelined_read_from_a_tiled_tiff_equals_the_simple_path(segmenter, crop, tmp_path):
    path = tmp_path / "crop.tif"
    pyvips.Image.new_from_array(crop).tiffsave(str(path), tile=True, tile_width=64,
                                               tile_height=64, compression="deflate")
    grid = TileGrid(crop.shape[1], crop.shape[0], TileGeometry(128, 16), rows_per_task=2)
    image = open_image(path, max_pixels=10**9)
    y0, y1 = grid.strip_bounds(1)
    r0, r1 = grid.read_window(y0, y1)
    labels, stats = segmenter.segment_rows(image_rows(image), grid, y0, y1, 4, prefetch=2)
    expected = segmenter.segment_strip_simple(crop[r0:r1], grid, y0, y1, 4)
    assert np.array_equal(labels, expected)
    assert stats.read_s > 0 and stats.seconds >= stats.read_wait_s
    assert 0 < stats.device_s <= stats.seconds  # the model's time is part of the strip's


def test_core_rows_handed_out_are_exactly_the_strips_image_rows(segmenter, crop):
    """``on_core_rows`` sees every output row of the strip once, in order, with the image's
    own pixels (no halo, no padding): what a row worker shrinks into the preview thumbnail."""
    for rows_per_task in (1, 3):
        grid = TileGrid(crop.shape[1], crop.shape[0], TileGeometry(128, 16), rows_per_task)
        for y0, y1 in grid.all_strip_bounds():
            r0, r1 = grid.read_window(y0, y1)
            seen: list[np.ndarray] = []
            segmenter.segment_rows(region_rows(crop[r0:r1], r0), grid, y0, y1, 2,
                                   on_core_rows=lambda rows, seen=seen: seen.append(rows.copy()))
            assert all(len(s) == grid.stride for s in seen[:-1])
            np.testing.assert_array_equal(np.concatenate(seen), crop[y0:y1])


def test_threads_sharing_one_segmenter_get_the_sequential_labels(segmenter, crop):
    grid = TileGrid(crop.shape[1], crop.shape[0], TileGeometry(128, 16))
    bounds = grid.all_strip_bounds()
    expected = [segmenter.segment_strip_simple(crop[slice(*grid.read_window(*b))], grid, *b, 2)
                for b in bounds]
    got: dict[int, np.ndarray] = {}

    def work(i):
        y0, y1 = bounds[i]
        r0, _ = grid.read_window(y0, y1)
        got[i] = segmenter.segment_rows(region_rows(crop[r0:], r0), grid, y0, y1, 2)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(bounds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, labels in enumerate(expected):
        np.testing.assert_array_equal(got[i], labels)


def test_batch_size_auto_is_one_on_cpu(tiny_package):
    seg = Segmenter(tiny_package, device="cpu", batch_size=0)
    assert seg.batch_size == 1 and seg.batch_for(1024) == 1
    assert Segmenter(tiny_package, device="cpu", batch_size=6).batch_for(256) == 6


def test_a_reused_checkpoint_does_not_load_the_model(stack, micrograph):
    from submission import SubmissionService
    from worker.stages.planning import plan_job
    from worker.stages.segmenting import segment_row

    job = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph)))
    plan_job(stack, job.id)
    row = stack.table.rows.get(job.id, 1)
    labels = np.full((row.y1 - row.y0, 700), 2, np.uint8)
    labels[:, :100] = 1
    path = stack.cache_dir / "left.tif"
    write_strip(labels, path)
    stack.blobs.put_file(row_key(job.id, 1), path)  # as left by an attempt that died
    assert segment_row(stack, job.id, 1) == "done"
    assert stack.segmenters == {}  # counts came from model.json, not a loaded model
    done = stack.table.rows.get(job.id, 1)
    assert done.counts == [0, 100 * labels.shape[0], 600 * labels.shape[0]]
    np.testing.assert_array_equal(read_strip(stack.local_blob(row_key(job.id, 1))), labels)


def test_new_settings_defaults_and_bounds():
    s = Settings()
    assert (s.precision, s.torch_compile, s.prefetch_bands, s.rows_in_flight) == (
        "bf16", False, 2, 1)
    assert s.fold_batchnorm is True
    with pytest.raises(ValueError):
        Settings(rows_in_flight=0)
    with pytest.raises(ValueError):
        Settings(precision="int8")


def test_whole_image_pass_pads_in_one_call_and_gives_probabilities(segmenter, crop):
    image = crop[:90, :70]
    padded = segmenter.whole_image_input(image, 16)
    assert padded.shape == (128, 128, 3)  # 90 + 32 and 70 + 32 px, up to a side it takes
    np.testing.assert_array_equal(padded, np.pad(image, [(16, 22), (16, 42), (0, 0)],
                                                 mode="reflect"))
    probs = segmenter.probabilities_single_pass(image, 16)
    assert probs.shape == (segmenter.package.n_classes, 90, 70)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(probs.argmax(0), segmenter.segment_single_pass(image, 16))
    black = segmenter.probabilities_single_pass(image, 16, "constant")
    assert not np.allclose(black, probs)  # what surrounds the image reaches the labels
    assert (segmenter.whole_image_input(image, 16, "constant")[:16] == 0).all()


@pytest.mark.parametrize("edge_pad", [0, 8])
def test_the_package_border_shapes_the_grid_and_an_image_within_a_tile_is_one_pass(
        segmenter, crop, edge_pad):
    """``Segmenter.grid`` takes the package's edge_pad; an image that fits one tile with it is
    labelled exactly as a whole-image pass with that much mirrored image around it."""
    package = segmenter.package.model_copy(update={"edge_pad": edge_pad})
    seg = Segmenter.from_model(package, segmenter.model, threads=1)
    grid = seg.grid(70, 90)
    assert grid.edge_pad_px == edge_pad and grid.unit == 32
    up = [-(-(n + 2 * edge_pad) // 32) * 32 for n in (90, 70)]  # to the next 32 px
    assert grid.tile_shape_at(grid.row_spans[0], 0) == tuple(up)
    image = crop[:90, :70]
    np.testing.assert_array_equal(seg.segment_array(image),
                                  seg.segment_single_pass(image, edge_pad))
    # a larger image: pipelined equals simple with shifted, padded tiles
    big = seg.grid(crop.shape[1], crop.shape[0], rows_per_task=2)
    for y0, y1 in big.all_strip_bounds():
        r0, r1 = big.read_window(y0, y1)
        simple = seg.segment_strip_simple(crop[r0:r1], big, y0, y1, 3)
        piped, _ = seg.segment_rows(region_rows(crop[r0:r1], r0), big, y0, y1, 3, prefetch=2)
        assert np.array_equal(piped, simple)
    # a edge_pad over a job's smaller halo is cut to the halo
    assert seg.grid(70, 90, TileGeometry(128, 4)).edge_pad_px == min(edge_pad, 4)


def test_a_reduced_package_grid_shrinks_tiles_in_its_own_side_unit(segmenter):
    """At input scale 0.125 a side the network takes is a multiple of 256 px."""
    package = segmenter.package.model_copy(update={"input_scale": 0.125, "tile_size": 1024,
                                                   "halo": 128, "edge_pad": 16})
    seg = Segmenter.from_model(package, segmenter.model, threads=1)
    grid = seg.grid(700, 300)
    assert grid.unit == 256 and grid.tile_shape_at(grid.row_spans[0], 0) == (512, 768)  # 332 and 732 px, up to 256
    # the module function is the same rule without a package (the trainer's estimate uses it)
    assert serving_grid(700, 300, package.geometry, 0.125, edge_pad=16) == grid


@pytest.mark.parametrize(("n", "scale", "side"), [(1, 1.0, 32), (33, 1.0, 64), (1, 0.25, 128),
                                                   (129, 0.25, 256), (1, 0.125, 256),
                                                   (300, 0.125, 512), (1, 0.5, 64)])
def test_network_side_is_the_smallest_side_the_scale_takes(n, scale, side):
    assert network_side(n, scale) == side
