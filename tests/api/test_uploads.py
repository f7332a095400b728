"""/v1/uploads: the local store (parts PUT to the API, streamed to disk) and S3 (moto server:
presigned PUTs, a multipart upload interrupted and resumed), then a job from the upload."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import httpx
import pytest

from storage.blobs.store import BlobStore
from tests.api.conftest import MODEL, drain_tasks, make_api, make_settings
from tests.api.live import live_server

MIB = 1024 * 1024
PART = 5 * MIB


def _data(size: int) -> bytes:
    return os.urandom(size)


def _part(data: bytes, n: int, part_size: int = PART) -> bytes:
    return data[(n - 1) * part_size:n * part_size]


def test_local_upload_in_parts_then_a_job_reads_it(api):
    data = _data(2 * PART + 12345)
    r = api.client.post("/v1/uploads", json={"filename": "pellet 42.tif", "size": len(data),
                                              "part_size": PART})
    assert r.status_code == 201, r.text
    up = r.json()
    assert (up["parts"], up["part_size"], up["storage"], up["complete"]) == (3, PART, "local",
                                                                              False)
    assert up["key"] == f"uploads/{up['id']}/pellet_42.tif"
    assert sorted(up["urls"]) == ["1", "2", "3"]
    assert up["urls"]["2"].endswith(f"/v1/uploads/{up['id']}/parts/2")
    # Parts 1 and 3 arrive (bodies far over PELLETSEG_MAX_BODY_BYTES: parts are exempt).
    for n in (3, 1):
        r = api.client.put(up["urls"][str(n)], content=_part(data, n))
        assert r.status_code == 200, r.text
        assert r.json()["etag"] == hashlib.md5(_part(data, n)).hexdigest()
        assert r.headers["etag"] == f'"{r.json()["etag"]}"'
    state = api.client.get(f"/v1/uploads/{up['id']}").json()
    assert [p["number"] for p in state["parts_uploaded"]] == [1, 3]
    assert state["bytes_uploaded"] == PART + 12345
    # Completing early names the missing part; a job cannot use the upload yet.
    r = api.client.post(f"/v1/uploads/{up['id']}/complete")
    assert r.status_code == 409 and "missing 1 of 3 parts (2)" in r.json()["detail"]
    r = api.client.post("/v1/jobs", json={"upload_id": up["id"]})
    assert r.status_code == 409 and "is not complete" in r.json()["detail"]
    assert api.client.put(up["urls"]["2"], content=_part(data, 2)).status_code == 200
    done = api.client.post(f"/v1/uploads/{up['id']}/complete").json()
    assert done["complete"] and done["source_url"].startswith("file://")
    assert done["scenes"] == [] and state["scenes"] == []  # not an image of several scenes
    assert api.client.post(f"/v1/uploads/{up['id']}/complete").json()["complete"]  # idempotent
    blobs = BlobStore(api.settings.resolved_storage_url)
    assert hashlib.sha256(blobs.get_bytes(up["key"])).digest() == hashlib.sha256(data).digest()
    assert blobs.list(f"uploads/{up['id']}") == [f"uploads/{up['id']}/.manifest.json", up["key"]]
    r = api.client.post("/v1/jobs", json={"upload_id": up["id"], "labels": {"s": "42"}})
    assert r.status_code == 202, r.text
    assert r.json()["source_url"] == blobs.url(up["key"])
    assert drain_tasks(api.settings) == [("pelletseg.plan_job", r.json()["id"])]
    # A completed upload takes no more parts or URLs.
    assert api.client.put(up["urls"]["1"], content=_part(data, 1)).status_code == 409
    assert api.client.post(f"/v1/uploads/{up['id']}/urls", json={"parts": [1]}).status_code == 409


def test_a_completed_upload_of_several_scenes_lists_them_for_a_job_each(api, tmp_path):
    """An OME-TIFF of a thumbnail and two scenes (one per pellet of a mount): the completed
    upload lists scenes 1 and 2 (what ``pelletseg run`` would make a job each of, and what the
    dashboard submits), the uploading one none; a batch of a job per scene is accepted."""
    from tests.imaging.formats.test_inputs import write_scenes

    mount = tmp_path / "mount.ome.tif"
    write_scenes(mount)
    data = mount.read_bytes()
    up = api.client.post("/v1/uploads", json={"filename": mount.name, "size": len(data)}).json()
    assert up["scenes"] == []
    assert api.client.put(up["urls"]["1"], content=data).status_code == 200
    done = api.client.post(f"/v1/uploads/{up['id']}/complete").json()
    assert done["scenes"] == [1, 2]
    assert api.client.get(f"/v1/uploads/{up['id']}").json()["scenes"] == [1, 2]
    r = api.client.post("/v1/batches", json={"jobs": [{"upload_id": up["id"], "scene": s}
                                                      for s in done["scenes"]]})
    assert r.status_code == 202, r.text
    assert sorted(j["scene"] for j in r.json()["jobs"]) == [1, 2]
    single = tmp_path / "single.ome.tif"
    write_scenes(single, thumbnail=False)
    one = single.read_bytes()
    up = api.client.post("/v1/uploads", json={"filename": single.name, "size": len(one)}).json()
    assert api.client.put(up["urls"]["1"], content=one).status_code == 200
    assert api.client.post(f"/v1/uploads/{up['id']}/complete").json()["scenes"] == [0, 1]


def test_local_parts_of_the_wrong_length_are_refused_and_not_kept(api):
    up = api.client.post("/v1/uploads", json={"filename": "a.tif", "size": PART + 10,
                                              "part_size": PART}).json()
    url = up["urls"]["2"]
    r = api.client.put(url, content=b"x" * 11)
    assert r.status_code == 413 and "part 2 is 10 bytes" in r.json()["detail"]
    r = api.client.put(url, content=iter([b"x" * 6, b"x" * 6]))  # chunked: no Content-Length
    assert r.status_code == 422 and "longer than its 10 bytes" in r.json()["detail"]
    r = api.client.put(url, content=b"x" * 9)
    assert r.status_code == 422 and "has 9 bytes, expected 10" in r.json()["detail"]
    assert api.client.get(f"/v1/uploads/{up['id']}").json()["parts_uploaded"] == []
    store = os.path.join(api.settings.home, "store", "uploads", up["id"], ".parts")
    assert not [f for f in os.listdir(store) if ".tmp-" in f]  # temp files removed
    assert api.client.put(up["urls"]["1"].replace("/parts/1", "/parts/3"),
                          content=b"x").status_code == 422


def test_local_part_is_streamed_to_disk_not_held_in_memory(api_settings):
    api = make_api(api_settings)
    part = 32 * MIB
    path = api_settings.home / "big.bin"
    with open(path, "wb") as f:
        for _ in range(part // MIB):
            f.write(os.urandom(MIB))
    up = api.client.post("/v1/uploads", json={"filename": "big.tif", "size": part,
                                              "part_size": part}).json()

    def chunks():
        with open(path, "rb") as f:
            while block := f.read(256 * 1024):
                yield block

    with live_server(api.client.app) as base:
        tracemalloc.start()
        try:
            r = httpx.put(f"{base}/v1/uploads/{up['id']}/parts/1", content=chunks(),
                          headers={"Authorization": f"Bearer {api.key}",
                                   "Content-Length": str(part)}, timeout=60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert r.status_code == 200, r.text
    assert peak < part / 4, f"peak Python allocations {peak / MIB:.1f} MiB for a 32 MiB part"
    assert api.client.post(f"/v1/uploads/{up['id']}/complete").json()["complete"]


def test_abort_deletes_the_upload(api):
    up = api.client.post("/v1/uploads", json={"filename": "a.tif", "size": 10}).json()
    assert api.client.put(up["urls"]["1"], content=b"0123456789").status_code == 200
    assert api.client.delete(f"/v1/uploads/{up['id']}").status_code == 204
    assert api.client.get(f"/v1/uploads/{up['id']}").status_code == 404
    assert not os.path.exists(api.settings.home / "store" / "uploads" / up["id"])


def test_an_upload_a_queued_job_reads_is_kept_until_the_job_ends(api):
    up = api.client.post("/v1/uploads", json={"filename": "a.tif", "size": 10}).json()
    assert api.client.put(up["urls"]["1"], content=b"0123456789").status_code == 200
    assert api.client.post(f"/v1/uploads/{up['id']}/complete").json()["complete"]
    job = api.client.post("/v1/jobs", json={"upload_id": up["id"]}).json()
    r = api.client.delete(f"/v1/uploads/{up['id']}")
    assert r.status_code == 409 and f"{job['id']} (queued)" in r.json()["detail"]
    assert api.client.get(f"/v1/uploads/{up['id']}").json()["complete"]  # still there
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert api.client.delete(f"/v1/uploads/{up['id']}").status_code == 204
    assert api.client.get(f"/v1/uploads/{up['id']}").status_code == 404
    r = api.client.post(f"/v1/jobs/{job['id']}/rerun", json={})
    assert r.status_code == 422 and f"was upload {up['id']}, which has been deleted" in (
        r.json()["detail"])


@pytest.mark.parametrize("body, message", [
    ({"filename": "..", "size": 10}, "has no usable characters"),
    ({"filename": "a.tif", "size": 0}, "size: Input should be greater than or equal to 1"),
    ({"filename": "a.tif", "size": 10, "part_size": 1000}, "part_size: Input should be greater"),
    ({"filename": "a.tif", "size": 10**15}, "PELLETSEG_MAX_UPLOAD_BYTES"),
    ({"filename": "a.tif"}, "size: Field required"),
])
def test_invalid_upload_requests_are_422(api, body, message):
    r = api.client.post("/v1/uploads", json=body)
    assert r.status_code == 422 and message in r.json()["detail"]


@pytest.mark.parametrize("upload_id", ["0d8c9a52-43be-4f0e-a3c4-6d16a3f0c1aa", "not-a-uuid",
                                       "..%2F..%2Fjobs"])
def test_unknown_uploads_are_404_and_jobs_naming_them_422(api, upload_id):
    assert api.client.get(f"/v1/uploads/{upload_id}").status_code == 404
    assert api.client.post(f"/v1/uploads/{upload_id}/complete").status_code == 404
    r = api.client.post("/v1/jobs", json={"upload_id": upload_id})
    assert r.status_code == 422 and "no such upload" in r.json()["detail"]
    assert api.table.jobs.list() == []


def test_source_and_upload_together_are_refused(api):
    r = api.client.post("/v1/jobs", json={"source_url": "s3://b/x.tif",
                                          "upload_id": "0d8c9a52-43be-4f0e-a3c4-6d16a3f0c1aa"})
    assert r.status_code == 422 and "exactly one of source_url and upload_id" in r.json()["detail"]


def test_uploads_on_a_store_whose_scheme_jobs_may_not_read_are_refused(tmp_path):
    api = make_api(make_settings(tmp_path, default_model=MODEL, allowed_source_schemes=["s3"]))
    up = api.client.post("/v1/uploads", json={"filename": "a.tif", "size": 3}).json()
    api.client.put(up["urls"]["1"], content=b"abc")
    api.client.post(f"/v1/uploads/{up['id']}/complete")
    r = api.client.post("/v1/jobs", json={"upload_id": up["id"]})
    assert r.status_code == 422 and "PELLETSEG_ALLOWED_SOURCE_SCHEMES" in r.json()["detail"]


@pytest.fixture
def s3_api(tmp_path, s3_bucket):
    return make_api(make_settings(tmp_path, default_model=MODEL,
                                  storage_url=f"s3://{s3_bucket}/store"))


def test_s3_multipart_upload_interrupted_and_resumed(s3_api, s3_bucket):
    import boto3

    api = s3_api
    data = _data(2 * PART + 777)
    up = api.client.post("/v1/uploads", json={"filename": "P-7.tif", "size": len(data),
                                              "part_size": PART}).json()
    assert (up["storage"], up["parts"]) == ("s3", 3)
    assert all("X-Amz-Signature=" in u for u in up["urls"].values())
    storage = httpx.Client()  # no Authorization header: the URLs are presigned
    # Parts 1 and 2 go up, then the network breaks.
    for n in (1, 2):
        r = storage.put(up["urls"][str(n)], content=_part(data, n))
        assert r.status_code == 200 and r.headers["etag"].strip('"') == hashlib.md5(
            _part(data, n)).hexdigest()
    # A new client process asks what arrived and gets fresh URLs for the rest only.
    state = api.client.get(f"/v1/uploads/{up['id']}").json()
    assert [(p["number"], p["size"]) for p in state["parts_uploaded"]] == [(1, PART), (2, PART)]
    missing = [n for n in range(1, 4) if n not in {p["number"] for p in state["parts_uploaded"]}]
    assert missing == [3]
    urls = api.client.post(f"/v1/uploads/{up['id']}/urls", json={"parts": missing}).json()
    assert list(urls["urls"]) == ["3"] and urls["urls_expire_at"]
    assert storage.put(urls["urls"]["3"], content=_part(data, 3)).status_code == 200
    done = api.client.post(f"/v1/uploads/{up['id']}/complete")
    assert done.status_code == 200, done.text
    key = f"store/uploads/{up['id']}/P-7.tif"
    assert done.json()["source_url"] == f"s3://{s3_bucket}/{key}"
    assert done.json()["scenes"] == []  # not an image of several scenes
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    r = api.client.post("/v1/jobs", json={"upload_id": up["id"]})
    assert r.status_code == 202 and r.json()["source_url"] == f"s3://{s3_bucket}/{key}"
    # The API does not take parts of S3 uploads itself.
    up2 = api.client.post("/v1/uploads", json={"filename": "b.tif", "size": 4}).json()
    r = api.client.put(f"/v1/uploads/{up2['id']}/parts/1", content=b"abcd")
    assert r.status_code == 409 and "presigned URLs" in r.json()["detail"]


def test_s3_single_part_upload_and_abort(s3_api, s3_bucket):
    import boto3

    api = s3_api
    up = api.client.post("/v1/uploads", json={"filename": "small.png", "size": 5}).json()
    assert up["parts"] == 1 and "uploadId" not in up["urls"]["1"]
    assert httpx.put(up["urls"]["1"], content=b"hello").status_code == 200
    assert api.client.get(f"/v1/uploads/{up['id']}").json()["bytes_uploaded"] == 5
    assert api.client.post(f"/v1/uploads/{up['id']}/complete").json()["complete"]
    big = api.client.post("/v1/uploads", json={"filename": "big.tif", "size": PART + 1,
                                               "part_size": PART}).json()
    httpx.put(big["urls"]["1"], content=b"x" * PART)
    assert api.client.delete(f"/v1/uploads/{big['id']}").status_code == 204
    assert api.client.delete(f"/v1/uploads/{up['id']}").status_code == 204
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket=s3_bucket, Prefix="uploads/").get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_s3_upload_of_several_scenes_lists_them_from_its_structure_alone(s3_api, tmp_path):
    """An OME-TIFF of a thumbnail and two scenes uploaded to S3 (moto server): its scenes come
    from ranged reads of its first page's OME-XML, as on a local store."""
    from tests.imaging.formats.test_inputs import write_scenes

    mount = tmp_path / "mount.ome.tif"
    write_scenes(mount)
    data = mount.read_bytes()
    api = s3_api
    up = api.client.post("/v1/uploads", json={"filename": mount.name, "size": len(data)}).json()
    assert up["storage"] == "s3" and up["scenes"] == []
    assert httpx.put(up["urls"]["1"], content=data).status_code == 200
    done = api.client.post(f"/v1/uploads/{up['id']}/complete").json()
    assert done["complete"] and done["scenes"] == [1, 2]


def test_a_part_the_stores_full_disk_refuses_is_503_with_the_reason_and_not_kept(api,
                                                                                  monkeypatch):
    """Before 2026-12-07 a local store with no room left answered a part with 500 'internal
    server error; see the server log'. Now the reason (503, as for any store failure), nothing
    of the part kept, and the same part sent again once there is room is taken."""
    from storage.blobs import upload_parts

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to make a disk that is full")
    data = _data(PART + 10)
    up = api.client.post("/v1/uploads", json={"filename": "a.tif", "size": len(data),
                                              "part_size": PART}).json()
    opened = upload_parts.PartWriter.__init__

    def into_a_full_disk(self, *args, **kwargs):
        opened(self, *args, **kwargs)
        self.file.close()
        self.file = open("/dev/full", "wb")  # every write fails with ENOSPC

    monkeypatch.setattr(upload_parts.PartWriter, "__init__", into_a_full_disk)
    r = api.client.put(up["urls"]["1"], content=_part(data, 1))
    assert r.status_code == 503, r.text
    assert "cannot store part 1" in r.json()["detail"]
    assert "No space left on device" in r.json()["detail"]
    assert api.client.get(f"/v1/uploads/{up['id']}").json()["parts_uploaded"] == []
    store = os.path.join(api.settings.home, "store", "uploads", up["id"], ".parts")
    assert not [f for f in os.listdir(store) if ".tmp-" in f]
    monkeypatch.setattr(upload_parts.PartWriter, "__init__", opened)
    for n in (1, 2):
        assert api.client.put(up["urls"][str(n)], content=_part(data, n)).status_code == 200
    done = api.client.post(f"/v1/uploads/{up['id']}/complete")
    assert done.status_code == 200 and done.json()["complete"], done.text
