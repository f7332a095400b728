"""The client commands as a new user meets them: one ``--api/--api-key`` for all, no
``--home`` on ``submit``, no webhook talk when none was set, errors that name the fix, a file
that is not an image refused before anything is uploaded, and job errors that show paths as
text (never Python ``b'...'``)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

import cli.remote
from cli.client import ApiClient
from cli.main import main
from cli.sniff import NotAnImageError, sniff

CLIENT_COMMANDS = ["submit", "jobs", "status", "watch", "cancel", "results"]


def mock_api(monkeypatch, handler) -> list[httpx.Request]:
    """Route the commands' API calls to ``handler(request) -> httpx.Response``; returns the
    list of requests made."""
    seen: list[httpx.Request] = []

    def record(request):
        seen.append(request)
        return handler(request)

    class Mocked(ApiClient):
        def __init__(self, base_url, api_key=None, **_):
            super().__init__(base_url, api_key, transport=httpx.MockTransport(record),
                             storage_transport=httpx.MockTransport(record))

    monkeypatch.setattr(cli.remote, "ApiClient", Mocked)
    return seen


def job_doc(**changes) -> dict:
    doc = {"id": "j1", "status": "failed", "source_url": "file:///data/p.tif",
           "model": {"name": "m", "version": "1"}, "rows_done": 0, "rows_running": 0,
           "rows_pending": 0, "rows_failed": 1, "rows_total": 1,
           "created_at": "2026-12-03T00:00:00", "finished_at": None, "batch_id": None,
           "error": "p.tif: not a readable image", "webhook_url": None,
           "webhook": {"status": None, "event": "failed", "attempts": 0, "last_error": None}}
    return {**doc, **changes}


def test_client_commands_share_api_options_and_submit_has_no_home():
    options = {}
    for name in [*CLIENT_COMMANDS, "resume"]:
        params = {p.name: p for p in main.commands[name].params}
        assert "api_url" in params and "api_key" in params, name
        options[name] = (params["api_url"].envvar, params["api_key"].envvar,
                         params["api_key"].help)
    assert len(set(options.values())) == 1, options
    assert "home" not in {p.name for p in main.commands["submit"].params}
    res = CliRunner().invoke(main, ["submit", "--home", "/tmp/x", "a.tif"])
    assert res.exit_code == 2 and "No such option '--home'" in res.output


def test_status_says_nothing_about_webhooks_when_none_was_set(monkeypatch):
    mock_api(monkeypatch, lambda r: httpx.Response(200, json=job_doc()))
    res = CliRunner().invoke(main, ["status", "j1", "--api", "http://api.test"])
    assert res.exit_code == 0 and "failed" in res.output
    assert "webhook" not in res.output.lower()
    hooked = job_doc(webhook_url="https://lims.test/hook",
                     webhook={"status": "delivered", "event": "failed", "attempts": 1,
                              "last_error": None})
    mock_api(monkeypatch, lambda r: httpx.Response(200, json=hooked))
    res = CliRunner().invoke(main, ["status", "j1", "--api", "http://api.test"])
    assert "webhook  delivered after 1 attempt(s)" in res.output


def test_no_api_error_names_the_fix():
    # port 9 (discard) on the loopback: nothing listens there
    res = CliRunner().invoke(main, ["jobs", "--api", "http://127.0.0.1:9"])
    assert res.exit_code == 2
    assert "no API at http://127.0.0.1:9" in res.output
    assert "start `pelletseg serve` or pass --api URL" in res.output


def test_refused_key_error_names_the_fix(monkeypatch):
    mock_api(monkeypatch, lambda r: httpx.Response(401, json={"detail": "missing API key"}))
    res = CliRunner().invoke(main, ["jobs", "--api", "http://api.test"])
    assert res.exit_code == 2 and "HTTP 401: missing API key" in res.output
    assert "--api-key" in res.output and "pelletseg apikey create NAME" in res.output


def test_submit_refuses_a_file_that_is_not_an_image_before_uploading(tmp_path, monkeypatch):
    seen = mock_api(monkeypatch, lambda r: httpx.Response(500))
    good = tmp_path / "pellet.tif"
    good.write_bytes(b"II*\x00" + bytes(100))
    notes = tmp_path / "notes.txt"
    notes.write_text("magnification 20x\n")
    res = CliRunner().invoke(main, ["submit", str(good), str(notes), "--api", "http://api.test"])
    assert res.exit_code == 2 and seen == []  # nothing went out, not even the good file
    assert f"{notes}: not an image (first bytes 6d 61 67 6e" in res.output
    assert "PNG, JPEG, Zeiss CZI" in res.output and "nothing was uploaded" in res.output
    assert "b'" not in res.output


def test_sniff_knows_the_formats_written_by_their_own_writers(tmp_path):
    pyvips = pytest.importorskip("pyvips")
    image = pyvips.Image.black(16, 16)
    for suffix, kind, options in [(".tif", "TIFF", {}), (".tif", "BigTIFF", {"bigtiff": True}),
                                  (".png", "PNG", {}), (".jpg", "JPEG", {})]:
        path = tmp_path / f"{kind}{suffix}"
        image.write_to_file(str(path), **options)
        assert sniff(path) == kind
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "a.ome.tif", np.zeros((8, 8), np.uint8), ome=True)
    assert sniff(tmp_path / "a.ome.tif") == "TIFF"


def test_sniff_knows_czi(tmp_path):
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    with pyczi.create_czi(str(tmp_path / "a.czi"), exist_ok=True) as czi:
        czi.write(data=np.zeros((8, 8), np.uint8), plane={"C": 0, "T": 0, "Z": 0})
    assert sniff(tmp_path / "a.czi") == "CZI"


def test_sniff_mrxs_needs_its_folder_and_refuses_the_rest(tmp_path):
    slide = tmp_path / "slide.mrxs"
    slide.write_text("[GENERAL]\n")
    with pytest.raises(NotAnImageError, match="needs its data folder"):
        sniff(slide)
    (tmp_path / "slide").mkdir()
    (tmp_path / "slide" / "Slidedat.ini").write_text("[GENERAL]\n")
    assert sniff(slide) == "MRXS"
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(NotAnImageError, match="empty"):
        sniff(tmp_path / "empty.tif")
    with pytest.raises(NotAnImageError, match="no such file"):
        sniff(tmp_path / "absent.tif")
    (tmp_path / "x.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(NotAnImageError, match="not an image"):
        sniff(tmp_path / "x.json")


def test_job_errors_show_paths_as_text(tmp_path):
    pytest.importorskip("pyvips")
    from imaging.errors import ImageFormatError, vips_text
    from imaging.reading import open_image

    bad = tmp_path / "scan é 1.tif"
    bad.write_text("not an image")
    with pytest.raises(ImageFormatError) as caught:
        open_image(bad, max_pixels=10**9)
    assert "b'" not in str(caught.value) and 'b"' not in str(caught.value)
    assert str(bad) in str(caught.value)  # the local copy's path, as text
    raw = Exception("unable to load from file b'/data/it\\'s \\xc3\\xa9.tif'\n  detail\n")
    assert vips_text(raw) == "unable to load from file /data/it's é.tif; detail"


def test_a_folder_stands_for_the_image_files_directly_in_it(tmp_path):
    from cli.sniff import expand_folders

    folder = tmp_path / "sections"
    (folder / "sub").mkdir(parents=True)
    for name in ["P-2.TIF", "P-1.ome.tiff", "P-3.jpg", "scan.czi", ".P-0.tif", "notes.txt",
                 "sub/P-9.tif"]:
        (folder / name).write_bytes(b"II*\x00")
    single = tmp_path / "single.png"
    single.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert expand_folders([str(single), str(folder), "s3://b/x.tif"]) == [
        str(single), *(str(folder / n) for n in ["P-1.ome.tiff", "P-2.TIF", "P-3.jpg",
                                                  "scan.czi"]), "s3://b/x.tif"]
    (tmp_path / "nothing" / "P-8.tif").mkdir(parents=True)  # a folder, even named .tif
    (tmp_path / "nothing" / "P-8.txt").write_bytes(b"II*\x00")
    with pytest.raises(NotAnImageError, match=r"nothing: a folder with no image file in it "
                                              r"\(looked for \.tif, .*\.mrxs\)"):
        expand_folders([str(folder), str(tmp_path / "nothing")])
    with pytest.raises(NotAnImageError, match="a folder, not an image file"):
        sniff(folder)
    olympus = tmp_path / "olympus"  # cellSens scans: the .vsi and its folder of .ets files
    (olympus / "_P-4_" / "stack1").mkdir(parents=True)
    (olympus / "P-4.vsi").write_bytes(b"II*\x00")
    with pytest.raises(NotAnImageError) as err:
        expand_folders([str(olympus)])
    assert "its .vsi files are a microscope's own format: for each, convert it to OME-TIFF " \
           "with Bio-Formats' bfconvert (`bfconvert -series N" in str(err.value)


@pytest.mark.parametrize("command", [["run", "--home", "HOME"], ["submit", "--api",
                                                                 "http://api.test"]])
def test_run_and_submit_refuse_a_folder_without_images(tmp_path, monkeypatch, command):
    seen = mock_api(monkeypatch, lambda r: httpx.Response(500))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here\n")
    args = [a.replace("HOME", str(tmp_path / "home")) for a in command]
    res = CliRunner().invoke(main, [args[0], str(empty), *args[1:]])
    assert res.exit_code == 2 and seen == []
    assert f"{empty}: a folder with no image file in it" in " ".join(res.output.split())
    assert not (tmp_path / "home").exists()  # run readied no stack


@pytest.mark.parametrize("command", ["resume", "cancel", "watch", "results"])
@pytest.mark.parametrize("args", [[], ["job-1", "--batch", "b-1"]])
def test_commands_on_a_job_or_a_batch_take_exactly_one(command, args):
    res = CliRunner().invoke(main, [command, *args, "--api", "http://api.test"])
    assert res.exit_code == 2 and "give a JOB_ID or --batch ID (one of them)" in res.output
    assert "--batch" in CliRunner().invoke(main, [command, "--help"]).output
