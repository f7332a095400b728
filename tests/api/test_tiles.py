"""Deep Zoom tiles (api/viewer/deepzoom.py, api/viewer/layers.py, api/routes/viewer.py) on small pyramidal
TIFFs written the way the reducer writes them: grid arithmetic, tile sizes per level, edge
tiles, exact label colours, 404/409/401/304 answers, remote stores copied to the cache once,
and the source converted to a pyramid once."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import pyvips

from api.viewer.deepzoom import DeepZoomGrid, PixelKind, Pyramid, TileError, encode_tile
from api.viewer.layers import LayerFiles
from core.spec import JobSpec
from core.states import JobStatus
from imaging.palette import palette_lut
from storage.blobs.layout import LABELS, OVERLAY, output_key
from storage.blobs.store import BlobStore
from tests.api.conftest import MODEL, make_api, make_settings

PALETTE = [(10, 20, 30), (200, 40, 40), (40, 200, 40), (40, 40, 200)]
CLASSES = [{"index": i, "name": f"c{i}", "rgb": list(rgb)} for i, rgb in enumerate(PALETTE)]


def label_array(width: int, height: int) -> np.ndarray:
    """(H, W) uint8 labels 0-3 in 37-px blocks (not aligned with any tile)."""
    y, x = np.mgrid[0:height, 0:width]
    return ((x // 37 + 2 * (y // 37)) % len(PALETTE)).astype(np.uint8)


def write_label_pyramid(path, labels: np.ndarray) -> None:
    """As imaging/stitching.py: pyramidal, mode-downsampled, deflate, 256-px tiles."""
    pyvips.Image.new_from_array(labels).copy(interpretation="b-w").tiffsave(
        str(path), tile=True, tile_width=256, tile_height=256, pyramid=True,
        region_shrink="mode", compression="deflate", bigtiff=True)


def write_image_pyramid(path, rgb: np.ndarray) -> None:
    """As the overlay: pyramidal JPEG, 256-px tiles."""
    pyvips.Image.new_from_array(rgb).copy(interpretation="srgb").tiffsave(
        str(path), tile=True, tile_width=256, tile_height=256, pyramid=True,
        compression="jpeg", Q=85, bigtiff=True)


def rgb_array(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 128)],
                    axis=-1).astype(np.uint8)


def decode(data: bytes) -> np.ndarray:
    image = pyvips.Image.new_from_buffer(data, "")
    return image.numpy().reshape(image.height, image.width, image.bands)


# ------------------------------------------------------------------ grid arithmetic
@pytest.mark.parametrize("w,h", [(1, 1), (2, 1), (255, 3), (256, 256), (257, 100), (1000, 700),
                                 (1001, 513), (20000, 17000)])
def test_grid_levels_follow_the_deep_zoom_rules(w, h):
    grid = DeepZoomGrid(w, h)
    assert grid.max_level == math.ceil(math.log2(max(w, h)))
    assert grid.level_size(grid.max_level) == (w, h)
    assert grid.level_size(0) == (1, 1)
    for level in range(grid.max_level + 1):
        s = 2 ** (grid.max_level - level)
        lw, lh = grid.level_size(level)
        assert (lw, lh) == (math.ceil(w / s), math.ceil(h / s))
        assert grid.tile_count(level) == (math.ceil(lw / 256), math.ceil(lh / 256))


def test_tile_boxes_cover_the_level_with_one_px_overlap():
    grid = DeepZoomGrid(1000, 700)  # level 10: 4 x 3 tiles
    assert grid.max_level == 10 and grid.tile_count(10) == (4, 3)
    assert grid.tile_box(10, 0, 0) == (0, 0, 257, 257)
    assert grid.tile_box(10, 1, 1) == (255, 255, 258, 258)
    assert grid.tile_box(10, 3, 2) == (767, 511, 233, 189)  # right and bottom edge
    assert grid.tile_box(9, 1, 1) == (255, 255, 245, 95)  # level 9 is 500 x 350
    assert grid.tile_box(0, 0, 0) == (0, 0, 1, 1)
    # union of the cores (overlap removed) is the whole level, without gaps
    covered = np.zeros((700, 1000), bool)
    for col in range(4):
        for row in range(3):
            x, y, w, h = grid.tile_box(10, col, row)
            covered[y:y + h, x:x + w] = True
    assert covered.all()


@pytest.mark.parametrize("level,col,row", [(11, 0, 0), (-1, 0, 0), (10, 4, 0), (10, 0, 3),
                                           (9, 2, 0), (0, 0, 1), (3, -1, 0)])
def test_tiles_outside_the_grid_are_refused(level, col, row):
    with pytest.raises(TileError):
        DeepZoomGrid(1000, 700).tile_box(level, col, row)


def test_grid_refuses_empty_images_and_bad_tiles():
    with pytest.raises(ValueError):
        DeepZoomGrid(0, 10)
    with pytest.raises(ValueError):
        DeepZoomGrid(10, 10, dz_tile_size=4, overlap=4)


def test_dzi_descriptor_is_valid_deep_zoom_xml():
    root = ET.fromstring(DeepZoomGrid(1000, 700).dzi_xml("png"))
    assert root.tag == "{http://schemas.microsoft.com/deepzoom/2008}Image"
    assert root.attrib == {"TileSize": "256", "Overlap": "1", "Format": "png"}
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert size.attrib == {"Width": "1000", "Height": "700"}


# ------------------------------------------------------------------ pyramid reads
@pytest.fixture(scope="module")
def labels_1001(tmp_path_factory):
    """A 1001 x 513 label pyramid (odd sizes: pages are floor-halved, levels ceil-halved)."""
    labels = label_array(1001, 513)
    path = tmp_path_factory.mktemp("tiles") / "labels.tif"
    write_label_pyramid(path, labels)
    return path, labels


def test_every_tile_of_every_level_has_its_box_size(labels_1001):
    path, _ = labels_1001
    pyramid = Pyramid(path, PixelKind.LABELS)
    assert [f for f, _ in pyramid.pages] == [1, 2, 4]
    grid = pyramid.grid
    for level in range(grid.max_level + 1):
        cols, rows = grid.tile_count(level)
        for col in range(cols):
            for row in range(rows):
                region = pyramid.read(grid, level, col, row)
                _, _, w, h = grid.tile_box(level, col, row)
                assert (region.width, region.height, region.bands) == (w, h, 1), (level, col, row)


def test_full_resolution_label_tiles_are_exact_palette_colours(labels_1001):
    path, labels = labels_1001
    pyramid = Pyramid(path, PixelKind.LABELS)
    grid, lut = pyramid.grid, palette_lut(PALETTE)
    colours = np.array(PALETTE, np.uint8)
    for col, row in [(0, 0), (1, 1), (3, 2)]:  # (3, 2): the 234 x 3 px corner
        x, y, w, h = grid.tile_box(grid.max_level, col, row)
        got = decode(encode_tile(pyramid.read(grid, grid.max_level, col, row),
                                 PixelKind.LABELS, lut))
        assert got.shape == (h, w, 3)
        np.testing.assert_array_equal(got, colours[labels[y:y + h, x:x + w]])


def test_lower_levels_read_the_matching_page_and_never_invent_labels(labels_1001):
    path, labels = labels_1001
    pyramid = Pyramid(path, PixelKind.LABELS)
    grid = pyramid.grid  # max level 10
    page1 = pyramid.pages[1][1].numpy()
    # level 9 (501 x 257) = page 1 (500 x 256) at scale 1, its last row/column repeated
    region = pyramid.read(grid, 9, 0, 0).numpy()
    assert region.shape == (257, 257)
    np.testing.assert_array_equal(region[:256], page1[:256, :257])
    np.testing.assert_array_equal(region[256], page1[255, :257])
    edge = pyramid.read(grid, 9, 1, 0).numpy()
    assert edge.shape == (257, 501 - 255)
    np.testing.assert_array_equal(edge[:256, :-1], page1[:256, 255:500])
    np.testing.assert_array_equal(edge[:256, -1], page1[:256, 499])
    for level in range(8):  # below the smallest page: subsampled, only real labels
        values = set(np.unique(pyramid.read(grid, level, 0, 0).numpy()))
        assert values <= set(np.unique(labels))


def test_image_tiles_are_jpeg_close_to_the_source(tmp_path):
    rgb = rgb_array(600, 300)
    path = tmp_path / "overlay.tif"
    write_image_pyramid(path, rgb)
    pyramid = Pyramid(path, PixelKind.IMAGE)
    grid = pyramid.grid
    data = encode_tile(pyramid.read(grid, grid.max_level, 1, 0), PixelKind.IMAGE)
    assert data[:3] == b"\xff\xd8\xff"  # JPEG
    x, y, w, h = grid.tile_box(grid.max_level, 1, 0)
    got = decode(data).astype(int)
    assert got.shape == (h, w, 3)
    assert np.abs(got - rgb[y:y + h, x:x + w]).mean() < 3


def test_a_pyramid_of_the_wrong_kind_is_refused(labels_1001):
    path, _ = labels_1001
    with pytest.raises(ValueError, match="must be 3-band"):
        Pyramid(path, PixelKind.IMAGE)
    with pytest.raises(ValueError, match="1 to 256 colours, got 257"):
        palette_lut([(0, 0, 0)] * 257)


# ------------------------------------------------------------------ routes
def succeeded_job(api, width=1000, height=700, source_url="file:///nowhere.tif"):
    """A succeeded job with labels.tif and overlay.tif written to the store."""
    api.table.models.register(name="tiles-model", version="1", sha256="b" * 64,
                            architecture="Unet", encoder="resnet18", classes=CLASSES)
    job = api.table.jobs.create(JobSpec(tile_size=1024, halo=128, source_url=source_url, model="tiles-model"))
    assert api.table.jobs.transition(job.id, JobStatus.PLANNING)
    api.table.jobs.set_model(job.id, "tiles-model", "1", "b" * 64)
    api.table.rows.insert(job.id, [(0, height)])
    assert api.table.jobs.transition(job.id, JobStatus.RUNNING, width=width, height=height,
                                   rows_total=1)
    blobs = BlobStore(api.settings.resolved_storage_url)
    work = api.settings.home / "work"
    work.mkdir(exist_ok=True)
    write_label_pyramid(work / LABELS, label_array(width, height))
    write_image_pyramid(work / OVERLAY, rgb_array(width, height))
    for name in (LABELS, OVERLAY):
        blobs.put_file(output_key(job.id, name), work / name)
    assert api.table.rows.claim(job.id, 0, "w", 60).claimed
    api.table.rows.complete(job.id, 0, counts=[width * height], checksum="c",
                          blob_key=f"jobs/{job.id}/rows/00000.tif", seconds=1.0)
    assert api.table.jobs.transition(job.id, JobStatus.SUCCEEDED)
    return api.table.jobs.get(job.id)


def test_descriptor_and_tiles_of_a_succeeded_job(api):
    job = succeeded_job(api)
    base = f"/v1/jobs/{job.id}/tiles"
    r = api.client.get(f"{base}/labels.dzi")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert ET.fromstring(r.text).attrib["Format"] == "png"
    assert ET.fromstring(api.client.get(f"{base}/overlay.dzi").text).attrib["Format"] == "jpeg"
    r = api.client.get(f"{base}/labels_files/10/3/2.png")
    assert r.status_code == 404  # not the DZI tile name pattern
    r = api.client.get(f"{base}/labels_files/10/3_2.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert decode(r.content).shape == (189, 233, 3)
    assert r.headers["cache-control"] == "private, max-age=86400" and r.headers["etag"]
    again = api.client.get(f"{base}/labels_files/10/3_2.png",
                           headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    r = api.client.get(f"{base}/overlay_files/8/0_0.jpeg")  # level 8: 250 x 175
    assert r.status_code == 200 and decode(r.content).shape == (175, 250, 3)


@pytest.mark.parametrize("path,code", [
    ("labels_files/11/0_0.png", 404),     # level past the full resolution
    ("labels_files/10/4_0.png", 404),     # column past the edge
    ("labels_files/10/0_3.png", 404),     # row past the edge
    ("labels_files/10/-1_0.png", 404),    # not a tile name
    ("labels_files/10/0_0.jpeg", 404),    # label tiles are PNG
    ("overlay_files/10/0_0.png", 404),    # overlay tiles are JPEG
    ("preview_files/10/0_0.jpeg", 404),   # not a layer
    ("preview.dzi", 404),
])
def test_bad_tile_requests_are_404(api, path, code):
    job = succeeded_job(api)
    r = api.client.get(f"/v1/jobs/{job.id}/tiles/{path}")
    assert r.status_code == code, r.text
    assert "detail" in r.json()


def test_tiles_need_a_key_and_a_succeeded_job(api):
    job = succeeded_job(api)
    r = api.client.get(f"/v1/jobs/{job.id}/tiles/overlay.dzi", headers={"Authorization": ""})
    assert r.status_code == 401
    other = api.table.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif", model=MODEL))
    r = api.client.get(f"/v1/jobs/{other.id}/tiles/overlay_files/0/0_0.jpeg")
    assert r.status_code == 409 and "queued" in r.json()["detail"]
    assert api.client.get("/v1/jobs/nope/tiles/overlay.dzi").status_code == 404


def test_missing_output_or_source_is_404_with_the_reason(api):
    job = succeeded_job(api)
    BlobStore(api.settings.resolved_storage_url).delete(output_key(job.id, OVERLAY))
    r = api.client.get(f"/v1/jobs/{job.id}/tiles/overlay.dzi")
    assert r.status_code == 404 and "overlay.tif" in r.json()["detail"]
    r = api.client.get(f"/v1/jobs/{job.id}/tiles/source.dzi")
    assert r.status_code == 404 and "no longer exists" in r.json()["detail"]


def test_a_source_that_cannot_be_converted_is_404_naming_it_and_no_earlier_request(api,
                                                                                   tmp_path):
    """libvips keeps messages of calls that returned in a process-wide buffer, and pyvips puts
    all of it into the next error: the answer names this job's source only, never what an
    earlier request left there (here a probe of a Latin-1 file name, which also made pyvips
    raise UnicodeDecodeError, a 500, before imaging.errors)."""
    src = tmp_path / "pellet.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n but not a PNG after all" * 10)
    job = succeeded_job(api, 700, 400, source_url=src.as_uri())
    earlier = bytes(tmp_path / "other-job-") + b"\xa9.tif"
    assert pyvips.vips_lib.vips_foreign_find_load(earlier) == pyvips.ffi.NULL
    r = api.client.get(f"/v1/jobs/{job.id}/tiles/source_files/10/0_0.jpeg")
    assert r.status_code == 404, r.text
    detail = r.json()["detail"]
    assert "cannot be converted for viewing" in detail and "pellet.png" in detail, detail
    assert "other-job" not in detail


def test_source_layer_is_converted_once_to_a_pyramid(api, tmp_path):
    grey = (rgb_array(700, 400)[..., 0]).copy()  # 1-band source: shown as grey RGB
    src = tmp_path / "pellet.png"
    pyvips.Image.new_from_array(grey).pngsave(str(src))
    job = succeeded_job(api, 700, 400, source_url=src.as_uri())
    base = f"/v1/jobs/{job.id}/tiles"
    assert api.client.get(f"{base}/source.dzi").status_code == 200
    r = api.client.get(f"{base}/source_files/10/1_1.jpeg")
    assert r.status_code == 200
    got = decode(r.content).astype(int)
    x, y, w, h = DeepZoomGrid(700, 400).tile_box(10, 1, 1)
    assert got.shape == (h, w, 3)
    assert np.abs(got - grey[y:y + h, x:x + w, None]).mean() < 3
    cached = api.settings.resolved_cache_dir / "viewer" / job.id / "source.tif"
    assert cached.exists()
    assert pyvips.Image.new_from_file(str(cached)).get("n-pages") == 3  # 700, 350, 175 px wide
    stamp = cached.stat().st_mtime_ns
    src.unlink()  # the converted pyramid is used from now on
    assert api.client.get(f"{base}/source_files/9/0_0.jpeg").status_code == 200
    assert cached.stat().st_mtime_ns == stamp


def test_remote_store_outputs_are_copied_to_the_cache_once(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, default_model=MODEL,
                             storage_url=f"memory://tiles-{tmp_path.name}")
    api = make_api(settings)
    job = succeeded_job(api)
    copies = []
    real = BlobStore.get_file

    def counting(self, key, local_path):
        copies.append(key)
        return real(self, key, local_path)

    monkeypatch.setattr(BlobStore, "get_file", counting)
    r = api.client.get(f"/v1/jobs/{job.id}/tiles/labels_files/10/0_0.png")
    assert r.status_code == 200
    assert copies == [output_key(job.id, LABELS)]
    assert (settings.resolved_cache_dir / "viewer" / job.id / LABELS).exists()
    store_calls = []
    monkeypatch.setattr(BlobStore, "exists", lambda self, key: store_calls.append(key))
    for tile in ("10/1_0", "9/0_0", "0/0_0"):  # from the local copy: no store request
        r = api.client.get(f"/v1/jobs/{job.id}/tiles/labels_files/{tile}.png")
        assert r.status_code == 200
    assert copies == [output_key(job.id, LABELS)] and store_calls == []


def test_cache_is_pruned_oldest_job_first(tmp_path):
    blobs = BlobStore((tmp_path / "store").as_uri())
    files = LayerFiles(blobs, tmp_path / "cache", ["file"], max_cache_bytes=2500)
    for i, name in enumerate(["old", "mid", "new"]):
        folder = tmp_path / "cache" / "viewer" / name
        folder.mkdir(parents=True)
        (folder / "overlay.tif").write_bytes(b"x" * 1000)
        os.utime(folder, (1000 + i, 1000 + i))
    files._prune(keep="old")  # 3000 bytes > 2500: drop the oldest but the one in use
    left = sorted(p.name for p in (tmp_path / "cache" / "viewer").iterdir())
    assert left == ["new", "old"]

