"""The source URL rules of core/sources.py: the file name a URL names, as its store reads it."""

from __future__ import annotations

import pytest

from core.sources import local_path, source_name


@pytest.mark.parametrize(("url", "name"), [
    ("/data/pellet 3.tif", "pellet 3.tif"),
    ("/data/pellet #3.tif", "pellet #3.tif"),  # a bare path is a path: '#' is a character
    ("file:///data/pellet%20%233.tif", "pellet #3.tif"),
    ("https://b.s3.amazonaws.com/runs/pellet%203.tif?X-Amz-Signature=abc", "pellet 3.tif"),
    # fsspec reads an object key as written: '#', '?' and '%' are the key's own characters
    ("s3://bucket/runs/pellet #3.tif", "pellet #3.tif"),
    ("s3://bucket/runs/pellet?3.tif", "pellet?3.tif"),
    ("gs://bucket/a%20b.tif", "a%20b.tif"),
    ("s3://bucket/runs/", ""),
])
def test_source_name_is_the_file_name_the_store_reads(url, name):
    assert source_name(url) == name


def test_a_file_url_is_percent_decoded_and_cut_at_its_fragment():
    assert str(local_path("file:///data/a%20b.tif")) == "/data/a b.tif"
    assert str(local_path("file:///data/pellet #3.tif")) == "/data/pellet "
