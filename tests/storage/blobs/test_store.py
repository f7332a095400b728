"""Blob store: atomic writes, key validation, local and in-memory backends."""

import pytest

from storage.blobs.store import BlobStore, check_key
from storage.errors import BlobNotFoundError, InvalidKeyError


@pytest.fixture(params=["file", "memory"])
def store(request, tmp_path):
    if request.param == "file":
        return BlobStore(tmp_path.as_uri())
    return BlobStore(f"memory://pelletseg-test-{tmp_path.name}")


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../../b", "a//b", "a/./b", "s3://x/y", "a\\b", " a"])
def test_keys_cannot_escape_the_root(key):
    with pytest.raises(InvalidKeyError):
        check_key(key)


def test_round_trip_and_listing(store, tmp_path):
    store.put_bytes("jobs/j1/rows/00000.tif", b"abc")
    store.put_bytes("jobs/j1/rows/00001.tif", b"defg")
    assert store.get_bytes("jobs/j1/rows/00000.tif") == b"abc"
    assert store.size("jobs/j1/rows/00001.tif") == 4
    assert store.list("jobs/j1/rows") == ["jobs/j1/rows/00000.tif", "jobs/j1/rows/00001.tif"]
    local = tmp_path / "dl" / "x.tif"
    store.get_file("jobs/j1/rows/00001.tif", local)
    assert local.read_bytes() == b"defg"
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00" * 10)
    store.put_file("models/m/1/weights.safetensors", src)
    assert store.exists("models/m/1/weights.safetensors")
    store.delete("models/m/1/weights.safetensors")
    assert not store.exists("models/m/1/weights.safetensors")


def test_overwrite_is_atomic_and_leaves_no_temp_keys(store):
    store.put_bytes("a/b.bin", b"1" * 1000)
    store.put_bytes("a/b.bin", b"2" * 10)
    assert store.get_bytes("a/b.bin") == b"2" * 10
    assert store.list("a") == ["a/b.bin"]
    assert not [p for p in store.fs.find(store.root) if ".tmp-" in p]


def test_missing_blob_raises_not_found(store, tmp_path):
    with pytest.raises(BlobNotFoundError):
        store.get_bytes("nope/x")
    with pytest.raises(BlobNotFoundError):
        store.get_file("nope/x", tmp_path / "x")


def test_local_store_writes_inside_root(tmp_path):
    store = BlobStore((tmp_path / "root").as_uri())
    store.put_bytes("x/y.txt", b"hi")
    assert (tmp_path / "root" / "x" / "y.txt").read_bytes() == b"hi"
    assert store.url("x/y.txt") == (tmp_path / "root").as_uri() + "/x/y.txt"


def test_row_checkpoints_on_s3_carry_the_lifecycle_tag_through_the_atomic_move(s3_bucket, tmp_path):
    import boto3

    from storage.blobs.layout import ROW_CHECKPOINT_TAG, row_key

    store = BlobStore(f"s3://{s3_bucket}/prefix")
    local = tmp_path / "row.tif"
    local.write_bytes(b"labels")
    key = row_key("job-1", 3)
    store.put_file(key, local, tags=ROW_CHECKPOINT_TAG)
    s3 = boto3.client("s3")
    tags = s3.get_object_tagging(Bucket=s3_bucket, Key=f"prefix/{key}")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == ROW_CHECKPOINT_TAG
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [f"prefix/{key}"]
    store.put_file("jobs/job-1/labels.tif", local)  # outputs are not tagged: kept
    assert s3.get_object_tagging(Bucket=s3_bucket, Key="prefix/jobs/job-1/labels.tif")["TagSet"] == []


def _delete_prefix_removes_that_folder_only(store):
    for key, size in [("jobs/a/labels.tif", 5), ("jobs/a/rows/00000.tif", 3),
                      ("jobs/a/rows/00001.micro.npz", 2), ("jobs/ab/labels.tif", 7),
                      ("uploads/a/p.tif", 11)]:
        store.put_bytes(key, b"x" * size)
    assert store.usage("jobs/a") == (3, 10) and store.usage("jobs") == (4, 17)
    assert store.delete_prefix("jobs/a") == (3, 10)
    assert store.usage("jobs/a") == (0, 0)
    assert store.list("jobs/a") == []
    assert store.list("jobs") == ["jobs/ab/labels.tif"]  # a folder whose name starts alike
    assert store.list("uploads") == ["uploads/a/p.tif"]
    assert store.delete_prefix("jobs/a") == (0, 0)  # again: nothing left, no error
    assert store.delete_prefix("jobs/never") == (0, 0)


def test_delete_prefix_removes_every_key_under_a_folder_and_nothing_beside_it(store):
    _delete_prefix_removes_that_folder_only(store)


def test_delete_prefix_on_s3(s3_bucket):
    _delete_prefix_removes_that_folder_only(BlobStore(f"s3://{s3_bucket}/prefix"))
