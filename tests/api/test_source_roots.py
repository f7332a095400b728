"""File sources submitted through the API are confined to the source roots
(``PELLETSEG_SOURCE_ROOTS`` plus the local store's uploads folder), after symlinks; relative and
traversing URLs are refused with 422 naming the roots; ``pelletseg serve`` on a non-loopback
address refuses to start while file sources have no root. The CLI's ``pelletseg run`` path
is not confined (tests/cli/test_run.py reads files under tmp paths outside any root)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from submission import SubmissionService
from tests.api.conftest import MODEL, make_api, make_settings


@pytest.fixture
def roots(tmp_path):
    inside = tmp_path / "lab"
    inside.mkdir()
    (inside / "p.tif").write_bytes(b"II*\x00")
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.tif").write_bytes(b"II*\x00")
    (inside / "link.tif").symlink_to(outside / "secret.tif")
    (inside / "escape").symlink_to(outside, target_is_directory=True)
    return inside, outside


@pytest.fixture
def confined(tmp_path, roots):
    inside, _ = roots
    return make_api(make_settings(tmp_path, default_model=MODEL, source_roots=[str(inside)]))


def _post(api, source: str):
    return api.client.post("/v1/jobs", json={"source_url": source})


def test_files_inside_a_root_are_accepted(confined, roots):
    inside, _ = roots
    for source in (str(inside / "p.tif"), (inside / "p.tif").as_uri()):
        r = _post(confined, source)
        assert r.status_code == 202, r.text
        assert r.json()["source_url"] == (inside / "p.tif").resolve().as_uri()
    r = _post(confined, str(inside))  # the root itself: a folder, said so
    assert r.status_code == 422 and "a folder, not an image file" in r.json()["detail"], r.text


@pytest.mark.parametrize("source", [
    "file:///etc/passwd", "/etc/passwd", "file://../../etc/shadow", "../private/secret.tif",
    "file:relative/p.tif",
])
def test_files_outside_the_roots_and_relative_urls_are_refused(confined, roots, source):
    r = _post(confined, source)
    assert r.status_code == 422, r.text
    detail = str(r.json()["detail"])
    assert str(roots[0].resolve()) in detail  # the message names the allowed roots
    assert confined.table.jobs.list() == []


def test_traversal_and_symlinks_out_of_a_root_are_refused(confined, roots):
    inside, _ = roots
    for source in (f"{inside}/../private/secret.tif", (inside / "link.tif").as_uri(),
                   str(inside / "link.tif"), str(inside / "escape" / "secret.tif")):
        r = _post(confined, source)
        assert r.status_code == 422, (source, r.text)
        assert "source roots" in str(r.json()["detail"])
    assert confined.table.jobs.list() == []


def test_default_settings_accept_no_file_source(api, tmp_path):
    image = tmp_path / "p.tif"
    image.write_bytes(b"II*\x00")
    for source in (str(image), image.as_uri(), "file:///etc/passwd"):
        r = _post(api, source)
        assert r.status_code == 422
        assert "PELLETSEG_SOURCE_ROOTS" in str(r.json()["detail"])
    assert _post(api, "s3://b/p.tif").status_code == 202


def test_uploads_folder_of_a_local_store_is_a_root(api):
    uploads = api.settings.home / "store" / "uploads" / "u1"
    uploads.mkdir(parents=True)
    (uploads / "p.tif").write_bytes(b"II*\x00")
    r = _post(api, (uploads / "p.tif").as_uri())
    assert r.status_code == 202, r.text


def test_the_cli_path_is_not_confined(tmp_path, roots):
    _, outside = roots
    settings = make_settings(tmp_path, default_model=MODEL, source_roots=[])
    make_api(settings)  # registers the model
    spec = SubmissionService(settings).build_spec(str(outside / "secret.tif"))
    assert spec.source_url == (outside / "secret.tif").resolve().as_uri()


def test_serve_on_another_host_refuses_file_sources_without_roots(tmp_path, monkeypatch):
    import uvicorn

    from cli.main import main

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--home",
                                       str(tmp_path / "h")])
    assert result.exit_code == 2
    assert "PELLETSEG_SOURCE_ROOTS" in result.output
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(kw))
    monkeypatch.setenv("PELLETSEG_SOURCE_ROOTS", f'["{tmp_path}"]')
    ok = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--home", str(tmp_path / "h")])
    assert ok.exit_code == 0, ok.output
    assert served["host"] == "0.0.0.0"
    monkeypatch.delenv("PELLETSEG_SOURCE_ROOTS")
    monkeypatch.setenv("PELLETSEG_ALLOWED_SOURCE_SCHEMES", '["s3"]')
    s3_only = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--home",
                                        str(tmp_path / "h")])
    assert s3_only.exit_code == 0, s3_only.output
