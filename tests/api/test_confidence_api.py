"""The confidence layer through the API: results carry the low-confidence share per class and
list confidence.tif / confidence.json; the viewer serves the confidence pyramid as coloured
PNG tiles; jobs without confidence still serve everything else."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import pyvips

from api.viewer.deepzoom import CONFIDENCE_STOPS, PixelKind, Pyramid, encode_tile
from storage.blobs.layout import CONFIDENCE, CONFIDENCE_JSON, output_key
from storage.blobs.store import BlobStore
from tests.api.test_results import succeeded_job as results_job
from tests.api.test_tiles import decode
from tests.api.test_tiles import succeeded_job as tiles_job

CONF_DOC = {"job_id": "J", "low_below": 0.5, "pixels_total": 2000, "mean_confidence": 0.9,
            "low_confidence_pixels": 50, "low_confidence_percent": 2.5,
            "classes": [{"index": 0, "name": "pore", "pixels": 2000, "low_confidence_pixels": 50,
                         "low_confidence_percent": 2.5, "mean_confidence": 0.9}]}


def _confidence_array(width, height):
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 255) // max(1, width - 1)).astype(np.uint8) | (y % 2).astype(np.uint8)


def _write_confidence_pyramid(path, conf):
    pyvips.Image.new_from_array(conf).copy(interpretation="b-w").tiffsave(
        str(path), tile=True, tile_width=256, tile_height=256, pyramid=True,
        region_shrink="mean", compression="deflate", bigtiff=True)


def test_results_show_the_low_confidence_share_per_class(api):
    job, _ = results_job(api)
    r = api.client.get(f"/v1/jobs/{job.id}/results")
    assert r.status_code == 200 and r.json()["confidence"] is None  # an older job
    assert "confidence.tif" not in r.json()["files"]
    assert api.client.get(f"/v1/jobs/{job.id}/files/confidence.tif").status_code == 404
    blobs = BlobStore(api.settings.resolved_storage_url)
    blobs.put_bytes(output_key(job.id, CONFIDENCE_JSON), json.dumps(CONF_DOC).encode())
    blobs.put_bytes(output_key(job.id, CONFIDENCE), b"tiff bytes")
    r = api.client.get(f"/v1/jobs/{job.id}/results").json()
    assert r["confidence"] == CONF_DOC
    assert r["confidence"]["classes"][0]["low_confidence_percent"] == 2.5
    assert {"confidence.tif", "confidence.json"} <= set(r["files"])
    got = api.client.get(r["files"]["confidence.tif"])
    assert got.status_code == 200 and got.content == b"tiff bytes"
    assert got.headers["content-type"] == "image/tiff"


def test_confidence_tiles_are_coloured_pngs(api):
    job = tiles_job(api, width=600, height=300)
    base = f"/v1/jobs/{job.id}/tiles"
    r = api.client.get(f"{base}/confidence.dzi")
    assert r.status_code == 404 and "confidence.tif" in r.json()["detail"]
    conf = _confidence_array(600, 300)
    work = api.settings.home / "work"
    _write_confidence_pyramid(work / CONFIDENCE, conf)
    BlobStore(api.settings.resolved_storage_url).put_file(output_key(job.id, CONFIDENCE),
                                                           work / CONFIDENCE)
    r = api.client.get(f"{base}/confidence.dzi")
    assert r.status_code == 200 and ET.fromstring(r.text).attrib["Format"] == "png"
    assert api.client.get(f"{base}/confidence_files/10/0_0.jpeg").status_code == 404
    r = api.client.get(f"{base}/confidence_files/10/0_0.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    tile = decode(r.content)
    assert tile.shape == (257, 257, 3)
    # the colours are the lookup of the stored values, pixel for pixel
    (v0, c0), _, (v2, c2) = CONFIDENCE_STOPS
    lut_img = pyvips.Image.new_from_array(np.arange(256, dtype=np.uint8)[None])
    lut = decode(encode_tile(lut_img.copy(interpretation="b-w"), PixelKind.CONFIDENCE))[0]
    assert tuple(lut[v0]) == c0 and tuple(lut[v2]) == c2
    np.testing.assert_array_equal(tile, lut[conf[:257, :257]])
    low = api.client.get(f"{base}/confidence_files/2/0_0.png")  # below the pyramid: averaged
    assert low.status_code == 200 and decode(low.content).shape[2] == 3


def test_a_confidence_pyramid_is_one_band(tmp_path):
    path = tmp_path / "c.tif"
    _write_confidence_pyramid(path, _confidence_array(300, 200))
    assert Pyramid(path, PixelKind.CONFIDENCE).width == 300
    rgb = tmp_path / "rgb.tif"
    pyvips.Image.new_from_array(np.zeros((20, 20, 3), np.uint8)).tiffsave(str(rgb))
    with pytest.raises(ValueError, match="1-band"):
        Pyramid(rgb, PixelKind.CONFIDENCE)
