"""The dashboard in a real browser: headless Chromium (Debian's package) driven by
Playwright, against a real API server (uvicorn) and a real ``celery worker`` process over an
embedded stack under tmp_path, with the tiny random-init model.

One scenario, as a user lives it: enter the API key once; jobs submitted through the API show
up and reach ``succeeded`` on the page without a reload; a job whose source file is missing
fails, the filters find it, the file is created and Resume runs it to ``succeeded``; a queued
job is cancelled with the two-click Cancel and deleted with the two-click Delete; the job page
shows an all-done row map, the phase-fraction table, the preview, and the deep-zoom viewer
loads tiles of every layer.
Screenshots of both pages go to tmp_path (and to ``$PELLETSEG_SCREENSHOT_DIR`` when set).

Skipped where Chromium or the ``playwright`` package is absent (``.ci/run`` installs both).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlparse

import httpx
import numpy as np
import pytest
import pyvips
import tifffile

from api.app import create_app
from core.spec import JobSpec
from storage.jobtable.api_keys import ApiKeys
from storage.jobtable.engine import cached_engine, upgrade
from storage.jobtable.table import JobTable
from tests.conftest import free_port, wait_for
from tests.imaging.formats.test_inputs import write_scenes
from tests.worker.conftest import DEMO_DATA, make_settings
from worker.local import LocalWorkers, log_tail

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("PELLETSEG_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
JOB_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def playwright_api():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install playwright)")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set "
                    "PELLETSEG_CHROMIUM)")
    return sync_api


class Server:
    """The API app served by uvicorn on 127.0.0.1:port in a thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def stack(tmp_path, tiny_package):
    """Settings (small tiles), migrated SQLite job table, the tiny model published, a key,
    the API server and one worker process."""
    from models import ModelRegistry

    # the API takes file sources only from its source roots: the test's folder
    settings = make_settings(tmp_path / "home", source_roots=[str(tmp_path)],
                             upload_part_bytes=5 * 1024 * 1024)  # the smallest: 6 MiB is 2 parts
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    ModelRegistry.from_settings(settings).publish(tiny_package)
    _, key = ApiKeys(cached_engine(settings.resolved_database_url)).create("browser")
    workers = LocalWorkers(settings, 1).start()
    try:
        with Server(create_app(settings)) as server:
            yield settings, server, key
    finally:
        workers.stop()


def wait_until(page, condition, what: str, timeout: float = 60) -> None:
    """Poll ``condition()`` every 0.25 s until it is true; fail after ``timeout`` s. Waits
    through the page, so Playwright keeps delivering its events meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        page.wait_for_timeout(250)


def screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / "screens" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("PELLETSEG_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


def _submitted(page, client, name: str) -> dict:
    """The job the dashboard's submit panel just made of the file ``name`` (once the API lists
    it), after its own toast ("Submitted job <its id>") shows: an earlier submission's toast
    may still be on screen for up to 5 s."""
    jobs = wait_for(lambda: [j for j in client.get("/v1/jobs").json()["jobs"]
                             if j["source_url"].endswith(name)], 60, f"a job of {name}")
    assert len(jobs) == 1, jobs
    page.wait_for_selector(f".toast:has-text('Submitted job {jobs[0]['id'][:8]}')")
    return jobs[0]


def test_dashboard_follows_resumes_cancels_and_views_jobs(playwright_api, stack, tmp_path):
    settings, server, key = stack
    image = tmp_path / "pellet.png"
    src = min(DEMO_DATA.glob("*.png"))
    pyvips.Image.new_from_file(str(src)).crop(100, 200, 320, 256).pngsave(str(image))
    missing = tmp_path / "later.png"  # created only before the resume
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=30)
    tile_responses: list[tuple[str, int]] = []
    errors: list[str] = []

    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(JOB_TIMEOUT_MS)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and "401" not in m.text
                    and errors.append(m.text))  # the first, keyless load is meant to get 401
            page.on("response", lambda r: "/tiles/" in r.url and tile_responses.append(
                (r.url, r.status)))

            # -- the key, entered once
            page.goto(server.url + "/")
            page.wait_for_selector("#banner:not([hidden])")  # 401 without a key
            assert "API key" in page.inner_text("#banner")
            page.fill("#api-key", key)
            page.click("#save-key")
            page.wait_for_selector("#banner", state="hidden")
            assert page.evaluate("localStorage.getItem('pelletseg.apiKey')") == key
            page.evaluate("window.__noReload = true")

            # -- two jobs through the API: one good, one whose source does not exist yet
            batch = client.post("/v1/batches", json={"jobs": [{
                "source_url": image.as_uri(), "precision": "fp32", "labels": {"sample": "P-1"}}]})
            good = batch.json()["jobs"][0]["id"]  # a batch of one: its table is on the job page
            good_batch = batch.json()["id"]
            bad = client.post("/v1/jobs", json={"source_url": missing.as_uri(),
                                                "labels": {"sample": "P-2"}}).json()["id"]
            # a 12-bit camera's 16-bit TIFF of the same field, given its significant bits,
            # with an area no image covers (alpha 0: a stitched mosaic's gap), whose file
            # records pixels that are not square (8 x 10 µm: a job warning)
            camera = tmp_path / "camera12.tif"
            grey = pyvips.Image.new_from_file(str(image)).numpy()
            grey = (grey if grey.ndim == 2 else grey[..., 0]).astype(np.uint16) << 4
            alpha = np.full(grey.shape, 65535, np.uint16)
            alpha[:20, :30] = 0
            tifffile.imwrite(camera, np.dstack([grey, alpha]), photometric="minisblack",
                             extrasamples=["unassalpha"], planarconfig="contig",
                             resolution=(1250, 1000), resolutionunit="CENTIMETER")
            twelve = client.post("/v1/jobs", json={"source_url": camera.as_uri(),
                                                   "significant_bits": 12}).json()["id"]

            def row(job_id: str) -> str:
                return f'#jobs tr[data-job-id="{job_id}"]'

            page.wait_for_selector(f'{row(bad)}[data-status="failed"]')
            assert "does not exist" in page.inner_text(row(bad))
            try:
                page.wait_for_selector(f'{row(good)}[data-status="succeeded"]')
            except playwright_api.TimeoutError:
                pytest.fail("job did not succeed on the page:\n" + log_tail(settings))
            assert "3 / 3 rows" in page.inner_text(row(good))

            # -- filters: status, then label
            page.select_option("#filter-status", "failed")
            page.wait_for_selector(row(good), state="detached")
            assert page.locator("#jobs tbody tr").count() == 1
            page.click("#filter-clear")
            page.fill("#filter-label", "sample:P-1")
            page.press("#filter-label", "Enter")
            page.wait_for_selector(row(bad), state="detached")
            page.wait_for_selector(row(good))
            assert page.locator("#jobs tbody tr").count() == 1
            assert "label=sample%3AP-1" in page.url  # filters are kept in the page URL
            page.click("#filter-clear")
            page.wait_for_selector(row(bad))
            # a job's batch link: the batch's jobs alone, without a reload
            page.click(f"{row(good)} a.batch-link")
            page.wait_for_selector(row(bad), state="detached")
            assert f"batch={good_batch}" in page.url and page.is_visible("#batch-filter")
            page.click("#batch-clear")
            page.wait_for_selector(row(bad))

            # -- resume the failed job once its cause is fixed
            shutil.copy(image, missing)
            page.click(f'{row(bad)} button[data-action="resume"]')
            page.wait_for_selector(f'{row(bad)}:not([data-status="failed"])')
            page.wait_for_selector(f'{row(bad)}[data-status="succeeded"]')

            # -- cancel a queued job (created without a message: it stays queued)
            table = JobTable(cached_engine(settings.resolved_database_url))
            stuck = table.jobs.create(JobSpec(source_url=image.as_uri(), model="tiny",
                                              tile_size=128, halo=16,
                                              labels={"sample": "P-3"})).id
            cancel = f'{row(stuck)} button[data-action="cancel"]'
            page.click(cancel)
            assert page.inner_text(cancel) == "Confirm cancel"
            page.click(cancel)
            page.wait_for_selector(f'{row(stuck)}[data-status="cancelled"]')
            assert client.get(f"/v1/jobs/{stuck}").json()["status"] == "cancelled"
            assert page.evaluate("window.__noReload") is True  # all of it without a reload
            screenshot(page, tmp_path, "dashboard-jobs")

            # -- delete the cancelled job: two clicks, then it leaves the table
            delete = f'{row(stuck)} button[data-action="delete"]'
            page.click(delete)
            assert page.inner_text(delete) == "Confirm delete"
            page.click(delete)
            page.wait_for_selector(".toast:has-text('Deleted job')")
            page.wait_for_selector(row(stuck), state="detached")
            assert client.get(f"/v1/jobs/{stuck}").json()["status"] == "deleted"

            # -- the job page
            page.click(f'{row(good)} a.job-link')
            page.wait_for_url(f"**/jobs/{good}")
            page.wait_for_selector('#job-status [data-status="succeeded"]')
            page.wait_for_selector("#fractions-table")
            strips = page.locator("#rowmap .strip")
            assert strips.count() == 3
            assert page.locator('#rowmap .strip[data-row-status="done"]').count() == 3
            classes = page.locator("#fractions-table tbody tr")
            assert classes.count() == 3
            assert page.inner_text("#fractions-table tbody").split("\n")[0].strip() != ""
            # how the rows were computed (fractions.json "inference"): one way for all rows here
            assert page.locator("#inference li").count() == 1
            assert page.inner_text("#inference").startswith("Computed with ")
            assert " on cpu, float32" in page.inner_text("#inference")  # the job pinned fp32
            # a done row's details name what computed it (GET /rows "inference"), in the
            # note's words (both worded by the API: core.inference)
            how = page.inner_text("#inference").removeprefix("Computed with ").strip()
            assert how.startswith(("openvino on cpu", "eager on cpu"))
            assert f" · {how}" in strips.first.get_attribute("title")
            assert "float32, asked by the job" in page.inner_text("#details")
            assert "Camera bits" not in page.inner_text("#details")  # an 8-bit source
            assert page.is_hidden("#job-warnings")  # nothing to warn of
            assert "Scene" not in page.inner_text("#details")  # not a multi-image OME-TIFF
            assert page.locator("#details").inner_text().count("tiny v1") == 1
            # the batch's table, downloaded with the key like the job's files
            with page.expect_download() as download:
                page.click("#batch-table button")
            assert download.value.suggested_filename == (
                f"batch-{batch.json()['id']}-results.csv")
            table_csv = Path(download.value.path()).read_text(encoding="utf-8")
            (line,) = csv.DictReader(io.StringIO(table_csv))
            assert line["job_id"] == good and line["status"] == "succeeded"
            assert line["label_sample"] == "P-1" and int(line["pellets"]) >= 0
            page.wait_for_selector("#sizes-table")  # the microstructure panel
            assert page.locator("#sizes-table tbody tr").count() == 3
            assert "figures are in px" in page.inner_text("#micro-pixel-size")
            assert page.locator("#pellets-table").count() == 1
            # the pellet table's oxidation columns: the tiny model has no hematite and
            # magnetite, so the page's own module renders a document that has them
            head, cells = page.evaluate("""async () => {
              const m = await import("/static/js/microstructure.js");
              const t = m.pelletTable({pixel_size_um: 0.5,
                oxidation: {oxidised: "hematite", unoxidised: "magnetite"},
                pellets: [{id: 1, area_mm2: 0.5, equivalent_diameter_mm: 0.8,
                  porosity_open_percent: 1, porosity_closed_percent: 2,
                  phase_fractions_percent: {hematite: 40, magnetite: 43},
                  oxidised_share_percent: 48.2, oxidation_front_px: 122.48,
                  oxidation_front_um: 61.24, oxidation_front_shell_percent: 96.4}]});
              return [[...t.querySelectorAll("th")].map((e) => e.textContent),
                      [...t.querySelectorAll("td")].map((e) => e.textContent)];
            }""")
            assert head[-3:] == ["hematite of hematite + magnetite %", "Oxidation front (µm)",
                                 "hematite above the front %"]
            assert cells[-3:] == ["48.20", "61.2", "96"] and len(cells) == len(head)
            # (no wait_for_function: it evaluates strings in the page, which the CSP forbids)
            page.wait_for_selector("#preview-img")
            wait_until(page, lambda: page.evaluate(
                "document.querySelector('#preview-img').naturalWidth") > 0, "the preview")
            page.wait_for_selector("#viewer[data-tiles-loaded]")
            page.check('input[name="base"][value="source"]', force=True)
            page.fill("#label-opacity", "50")
            page.dispatch_event("#label-opacity", "input")
            def layers_loaded() -> set[str]:
                return {u.split("/tiles/")[1].split("_files")[0] for u, s in tile_responses
                        if s == 200 and "_files/" in u}

            wait_until(page, lambda: {"source", "labels"} <= layers_loaded(), "source and label tiles")
            assert layers_loaded() == {"overlay", "source", "labels"}, tile_responses
            assert not [u for u, s in tile_responses if s >= 400]
            # -- the confidence layer and the low-confidence share per class
            assert page.locator("#confidence-table tbody tr").count() == 3
            page.check('input[name="base"][value="confidence"]', force=True)
            wait_until(page, lambda: "confidence" in layers_loaded(), "confidence tiles")
            assert not [u for u, s in tile_responses if s >= 400]
            page.wait_for_timeout(500)  # let the last tiles draw before the picture
            screenshot(page, tmp_path, "dashboard-job")

            # -- the batch's jobs: the job page's batch link lists them alone, with the table
            page.click("#batch-link")
            page.wait_for_url(f"**/?batch={good_batch}")
            page.wait_for_selector(row(good))
            assert page.locator("#jobs tbody tr").count() == 1  # not the jobs outside it
            screenshot(page, tmp_path, "dashboard-batch")
            assert page.inner_text("#batch-filter").startswith(f"batch {good_batch[:8]}")
            with page.expect_download() as download:
                page.click("#batch-filter button:not(#batch-clear)")
            assert download.value.suggested_filename == f"batch-{good_batch}-results.csv"
            assert Path(download.value.path()).read_text(encoding="utf-8") == table_csv
            page.click("#batch-resume")  # nothing failed in it: the API's 409, in words
            page.wait_for_selector(".toast-error")
            assert "has no failed or interrupted job to resume (1 succeeded)" in page.inner_text(
                ".toast-error")
            page.click("#batch-cancel")  # a second click within 4 s confirms
            assert page.inner_text("#batch-cancel") == "Confirm cancel"
            page.click("#batch-cancel")
            page.wait_for_selector(".toast-error:has-text('has no job left to cancel')")
            assert page.inner_text("#batch-cancel") == "Cancel batch"
            page.click("#batch-delete")  # its one job has succeeded: deleted on a second click
            assert page.inner_text("#batch-delete") == "Confirm delete"
            page.click("#batch-delete")
            page.wait_for_selector(".toast:has-text('Deleted 1 job of batch')")
            page.wait_for_selector(row(good), state="detached")
            assert client.get(f"/v1/jobs/{good}").json()["status"] == "deleted"
            page.click("#batch-rerun")  # its images again, as a new batch shown alone
            page.wait_for_selector(".toast:has-text('New batch')")
            page.wait_for_url(lambda url: f"batch={good_batch}" not in url and "batch=" in url)
            (again,) = client.get(f"/v1/batches/{page.url.split('batch=')[1]}").json()["jobs"]
            assert again["labels"]["rerun_of"] == good
            page.wait_for_selector(f'{row(again["id"])}[data-status="succeeded"]')
            conflict = [e for e in errors if "status of 409" in e]  # the browser logs them
            assert len(conflict) == 2
            for error in conflict:
                errors.remove(error)
            page.click("#batch-clear")
            page.wait_for_selector(row(bad))
            assert "batch=" not in page.url and page.is_hidden("#batch-filter")

            # -- a job's warnings in the list (in full on its page)
            page.goto(server.url)
            page.wait_for_selector(f"{row(twelve)} .warning-snippet")
            assert page.inner_text(f"{row(twelve)} .warning-snippet") == "⚠ pixels not square"
            assert page.locator(f"{row(good)} .warning-snippet").count() == 0
            screenshot(page, tmp_path, "dashboard-jobs-warned")

            # -- a 16-bit source's page says with how many camera bits it was read
            page.goto(f"{server.url}/jobs/{twelve}")
            page.wait_for_selector('#job-status [data-status="succeeded"]')
            assert "Camera bits\n12 of 16" in page.inner_text("#details")
            page.wait_for_selector("#nodata-note")
            assert page.inner_text("#nodata-note") == (
                f"600 px no image covers ({100 * 600 / grey.size:.2f} %): labelled background")
            assert page.is_visible("#job-warnings")
            assert page.get_attribute("#job-warnings .job-warning", "data-code") == (
                "pixels_not_square")
            screenshot(page, tmp_path, "job-warnings")
            assert page.inner_text("#job-warnings").startswith(
                "Warning: the file records pixels of 8 x 10 µm, not square")

            # -- the same file without its camera bits: refused as nearly black; its page
            # offers a rerun read as a 12-bit camera's image
            dark = client.post("/v1/jobs", json={"source_url": camera.as_uri()}).json()["id"]
            page.goto(f"{server.url}/jobs/{dark}")
            page.wait_for_selector("#rerun-bits")
            assert page.inner_text("#rerun-bits") == "Run again with 12 camera bits"
            assert client.get(f"/v1/jobs/{dark}").json()["significant_bits_suggested"] == 12
            page.click("#rerun-bits")
            page.wait_for_url(lambda url: "/jobs/" in url and dark not in url)
            page.wait_for_selector('#job-status [data-status="succeeded"]')
            assert "Camera bits\n12 of 16" in page.inner_text("#details")

            # -- delete a succeeded job from its page: its results give way to a note
            page.goto(f"{server.url}/jobs/{bad}")
            page.wait_for_selector("#preview-img")
            page.click('#job-actions button[data-action="delete"]')
            page.click('#job-actions button[data-action="delete"]')
            page.wait_for_selector('#job-status [data-status="deleted"]')
            page.wait_for_selector("#preview:has-text('Deleted: its outputs were removed')")
            assert page.locator("#downloads button").count() == 0
            # nothing leaves deleted; its image is kept, so it can be segmented again
            assert page.locator('#job-actions button').all_inner_texts() == ["Run again"]
            page.click('#job-actions button[data-action="rerun"]')
            page.wait_for_url(lambda url: f"/jobs/{bad}" not in url and "/jobs/" in url)
            page.wait_for_selector('#job-status [data-status="succeeded"]')
            rerun_id = page.url.rsplit("/", 1)[1]
            assert client.get(f"/v1/jobs/{rerun_id}").json()["labels"]["rerun_of"] == bad

            # -- submit from the page: a file that is not an image is refused before any byte
            # is sent; two images are uploaded and submitted as one batch, shown alone
            page.goto(server.url + "/")
            page.click("#submit-panel > summary")
            note = tmp_path / "notes.txt"
            note.write_text("not a micrograph")
            page.set_input_files("#submit-files", [str(note)])
            page.click("#submit-go")
            page.wait_for_selector(".toast-error:has-text('notes.txt: not an image file')")
            vsi = tmp_path / "Schliff 3.vsi"  # an Olympus scan: what to do with it
            vsi.write_bytes(b"II*\x00")
            page.set_input_files("#submit-files", [str(vsi)])
            page.click("#submit-go")
            page.wait_for_selector(".toast-error:has-text('Schliff 3.vsi: not an image file')")
            assert "convert it to OME-TIFF with Bio-Formats' bfconvert" in page.inner_text(
                ".toast-error:has-text('Schliff 3.vsi')")
            second = tmp_path / "P-9.png"
            shutil.copy(image, second)
            page.set_input_files("#submit-files", [str(image), str(second)])
            page.wait_for_selector("#submit-model option >> nth=1", state="attached")
            assert page.locator("#submit-model option").all_inner_texts() == [
                "the default", "tiny 1"]  # the registered models, listed when it opened
            page.select_option("#submit-model", label="tiny 1")
            page.fill("#submit-labels", "sample:P-9 lab:north")
            page.fill("#submit-pixel", "0.5")
            page.select_option("#submit-bits", "12")
            page.click("#submit-go")
            page.wait_for_selector(".toast:has-text('Submitted batch')")
            page.wait_for_url("**/?batch=*")
            submitted = page.url.split("batch=")[1]
            for job_id in (j["id"] for j in client.get(f"/v1/batches/{submitted}").json()["jobs"]):
                # the rows of these jobs (the table may still show the page before the filter)
                page.wait_for_selector(f'{row(job_id)}[data-status="succeeded"]')
            screenshot(page, tmp_path, "dashboard-submit")
            jobs = client.get(f"/v1/batches/{submitted}").json()["jobs"]
            assert sorted(j["source_url"].rsplit("/", 1)[1] for j in jobs) == ["P-9.png",
                                                                              "pellet.png"]
            assert all(j["labels"] == {"sample": "P-9", "lab": "north"} for j in jobs)
            assert all(j["pixel_size_um"] == 0.5 and j["status"] == "succeeded" for j in jobs)
            # given with the batch, stored on each spec; 8-bit PNGs are converted without it
            assert all(j["significant_bits"] is None for j in jobs)
            assert all(table.jobs.get(j["id"]).spec["significant_bits"] == 12 for j in jobs)
            assert all((j["model"]["name"], j["model"]["version"]) == ("tiny", "1") for j in jobs)
            # a file of several parts (6 MiB, parts of 5 MiB) arrives byte for byte; it is no
            # image, so its job fails with the reason
            big = tmp_path / "big.tif"
            big.write_bytes(b"II*\x00" + os.urandom(6 * 1024 * 1024))
            page.set_input_files("#submit-files", [str(big)])
            page.fill("#submit-labels", "")
            page.fill("#submit-pixel", "")
            page.select_option("#submit-bits", "")
            page.click("#submit-go")
            job = _submitted(page, client, "/big.tif")
            assert Path(unquote(urlparse(job["source_url"]).path)).read_bytes() == big.read_bytes()
            page.wait_for_selector(f'{row(job["id"])}[data-status="failed"]')

            # -- a scene of a multi-image OME-TIFF (a thumbnail, then two scenes)
            mount = tmp_path / "mount.ome.tif"
            write_scenes(mount)
            page.set_input_files("#submit-files", [str(mount)])
            page.fill("#submit-scene", "1.5")  # the form refuses it before any upload
            assert page.eval_on_selector("#submit-scene", "e => e.validity.valid") is False
            page.fill("#submit-scene", "2")
            page.click("#submit-go")
            job = _submitted(page, client, "/mount.ome.tif")
            assert job["scene"] == 2
            page.wait_for_selector(f'{row(job["id"])}[data-status="succeeded"]')
            assert client.get(f"/v1/jobs/{job['id']}").json()["width"] == 150  # scene 2's
            # without a scene: a job per scene (the completed upload lists them), one batch,
            # as `pelletseg run` does
            page.set_input_files("#submit-files", [str(mount)])
            page.click("#submit-go")
            page.wait_for_selector(".toast:has-text('a job per scene of a multi-scene file')")
            per_scene = wait_for(lambda: [
                j for j in client.get("/v1/jobs").json()["jobs"]
                if j["source_url"].endswith("/mount.ome.tif") and j["batch_id"]], 60, "the batch")
            assert sorted(j["scene"] for j in per_scene) == [1, 2]
            assert len({j["batch_id"] for j in per_scene}) == 1
            page.wait_for_url(f"**/?batch={per_scene[0]['batch_id']}")
            for j in per_scene:
                page.wait_for_selector(f'{row(j["id"])}[data-status="succeeded"]')
            # a job of it without a scene (through the API, or a source URL) is refused; its
            # page offers a job per scene, one batch
            r = client.post("/v1/jobs", json={"source_url": per_scene[0]["source_url"]})
            assert r.status_code == 202, r.text
            refused = client.get(f"/v1/jobs/{r.json()['id']}").json()
            assert wait_for(lambda: client.get(f"/v1/jobs/{refused['id']}").json()["scenes"], 60,
                            "the refused file") == [1, 2]
            assert client.get(f"/v1/jobs/{refused['id']}").json()["status"] == "failed"
            page.goto(f"{server.url}/jobs/{refused['id']}")
            page.wait_for_selector("#segment-scenes")
            assert "This file holds 2 scenes (1, 2)." in page.inner_text("#job-rerun-offer")
            screenshot(page, tmp_path, "job-scenes")
            page.click("#segment-scenes")
            page.wait_for_url("**/?batch=*")
            scenes = client.get(f"/v1/batches/{page.url.split('batch=')[1]}").json()["jobs"]
            assert sorted(j["scene"] for j in scenes) == [1, 2]
            assert all(j["labels"]["rerun_of"] == refused["id"] for j in scenes)
            for j in scenes:
                page.wait_for_selector(f'{row(j["id"])}[data-status="succeeded"]')
            page.goto(server.url)
            page.click("#submit-panel > summary")

            # -- an upload cut off midway continues when the same file is chosen again: only
            # the part the store lacks is sent
            cut = tmp_path / "cut.tif"
            cut.write_bytes(b"II*\x00" + os.urandom(6 * 1024 * 1024))
            puts: list[str] = []
            page.on("request", lambda r: r.method == "PUT" and puts.append(r.url))
            page.route("**/parts/2", lambda route: route.abort())  # the network drops part 2
            page.set_input_files("#submit-files", [str(cut)])
            page.click("#submit-go")
            page.wait_for_selector(".toast-error:has-text('Submit failed')")
            page.wait_for_selector("#submit-progress :text('not submitted')")
            page.unroute("**/parts/2")
            assert not [j for j in client.get("/v1/jobs").json()["jobs"]
                        if j["source_url"].endswith("/cut.tif")]
            puts.clear()
            page.set_input_files("#submit-files", [str(cut)])
            page.click("#submit-go")
            job = _submitted(page, client, "/cut.tif")
            assert [u.rsplit("/", 1)[1] for u in puts] == ["2"], puts
            assert Path(unquote(urlparse(job["source_url"]).path)).read_bytes() == cut.read_bytes()
            errors[:] = [e for e in errors if "ERR_FAILED" not in e]  # the dropped part's log
            assert errors == []
        finally:
            context.close()


def test_the_job_list_says_when_no_worker_runs(playwright_api, tmp_path, tiny_package):
    """``pelletseg serve`` alone (no ``pelletseg worker``): a submitted job showed ``queued``
    for ever with nothing to say why. The list now says that no worker runs and how to start
    one, and stops saying it once a worker beats."""
    from models import ModelRegistry

    settings = make_settings(tmp_path / "home", source_roots=[str(tmp_path)])
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    ModelRegistry.from_settings(settings).publish(tiny_package)
    table = JobTable(cached_engine(settings.resolved_database_url))
    _, key = ApiKeys(cached_engine(settings.resolved_database_url)).create("browser")
    image = tmp_path / "pellet.png"
    pyvips.Image.black(64, 64, bands=3).pngsave(str(image))
    errors: list[str] = []
    with Server(create_app(settings)) as server, playwright_api.sync_playwright() as pw:
        client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                              timeout=30)
        assert client.post("/v1/jobs", json={"source_url": image.as_uri()}).status_code == 202
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.fill("#api-key", key)
            page.click("#save-key")
            page.wait_for_selector("#no-workers", state="visible", timeout=30_000)
            assert "pelletseg worker --home" in page.inner_text("#no-workers")
            screenshot(page, tmp_path, "no-workers")
            table.heartbeats.register("elsewhere:1", interval=60)  # a worker starts
            page.wait_for_selector("#no-workers", state="hidden", timeout=30_000)
        finally:
            context.close()
    assert errors == []
