"""``pelletseg run`` and ``pelletseg demo`` as a user runs them: a subprocess that starts the
local stack and real worker processes, with the bundled model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips

from tests.conftest import port_open
from tests.worker.conftest import DEMO_DATA

OUTPUTS = {"labels.tif", "overlay.tif", "preview.png", "fractions.json", "fractions.csv",
           "microstructure.json", "pellets.csv", "size_distributions.csv", "boundaries.csv",
           "radial_profiles.csv", "confidence.tif", "confidence.json"}
OPTIONAL = {"radial_profiles.png"}  # left out when no pellet has a profile


def pelletseg(*args, env=None, timeout=300):
    full_env = {**os.environ, "PELLETSEG_TILE_SIZE": "256", "PELLETSEG_HALO": "32", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
        env=full_env,
    )


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> Path:
    src = sorted(DEMO_DATA.glob("*.png"))[0]
    out = tmp_path_factory.mktemp("cli") / "sample 1.png"  # a space in the name, on purpose
    pyvips.Image.new_from_file(str(src)).crop(0, 300, 600, 420).pngsave(str(out))
    return out


def _check_outputs(out: Path, width: int, height: int) -> dict:
    assert OUTPUTS <= {p.name for p in out.iterdir()} <= OUTPUTS | OPTIONAL
    doc = json.loads((out / "fractions.json").read_text())
    assert (doc["width"], doc["height"]) == (width, height)
    assert sum(c["pixels"] for c in doc["classes"]) == width * height
    assert abs(sum(c["percent"] for c in doc["classes"]) - 100) < 1e-6
    assert doc["model"]["name"] == "ebc-unet-mnv2"
    labels = pyvips.Image.new_from_file(str(out / "labels.tif"))
    assert (labels.width, labels.height, labels.bands, labels.format) == (width, height, 1, "uchar")
    return doc


def test_run_segments_a_file_and_copies_outputs(tmp_path, small_image):
    res = pelletseg("run", str(small_image), "--home", str(tmp_path / "home"), "--workers", "2",
                    "--out", str(tmp_path / "out"), "--pixel-size-um", "0.5")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Phase fractions" in res.stdout and "oxide" in res.stdout
    assert "model ebc-unet-mnv2 1 (Unet/mobilenet_v2" in res.stdout
    assert "trained on SEM cross-sections of environmental barrier coatings" in res.stdout
    assert "pixel size: 0.5 µm/px, from the job" in res.stdout  # the microstructure summary
    doc = _check_outputs(tmp_path / "out", 600, 420)
    assert doc["pixel_size_um"] == 0.5 and doc["mount_class_declared"] is True
    micro = json.loads((tmp_path / "out" / "microstructure.json").read_text())
    assert micro["pixel_size_um"] == 0.5
    assert isinstance(micro["pellets"], list)
    assert set(micro["size_distributions"]) == {"background", "oxide", "crack"}
    assert micro["size_distributions"]["crack"]["count"] >= 0
    assert micro["source"]["model"]["name"] == "ebc-unet-mnv2"
    # the outputs were copied out: the line says what the store still holds and the command
    # that frees it (its MB: the job's objects under the store's jobs/ID folder)
    job_id = re.search(r"pelletseg delete ([0-9a-f-]{36}) --home", res.stdout).group(1)
    store = tmp_path / "home" / "store" / "jobs" / job_id
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert f"the store keeps its own copy ({size / 1e6:.1f} MB, row checkpoints included); " \
        f"pelletseg delete {job_id} --home {tmp_path / 'home'} frees it" in " ".join(
            res.stdout.split())


def test_run_pins_the_jobs_precision_and_significant_bits(tmp_path, small_image):
    """``--precision fp32`` is stored on the job's spec and every row computes in float32
    (on a CPU with bfloat16 units the bundled package would otherwise be served in bf16);
    ``--significant-bits 12`` converts a 12-bit camera's 16-bit TIFF by its top 8 bits;
    fractions.json and the printed caption say both."""
    import numpy as np
    import tifffile

    from core.settings import get_settings
    from storage.jobtable import job_table

    twelve = tmp_path / "camera12.tif"
    eight = pyvips.Image.new_from_file(str(small_image)).numpy()
    tifffile.imwrite(twelve, eight.astype(np.uint16) << 4)
    home = tmp_path / "home"
    res = pelletseg("run", str(twelve), "--home", str(home), "--workers", "1",
                    "--out", str(tmp_path / "out"), "--precision", "fp32",
                    "--significant-bits", "12")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = _check_outputs(tmp_path / "out", 600, 420)
    assert [(g["precision"], g["f32_convs"]) for g in doc["inference"]] == [("f32", 0)]
    assert "float32" in res.stdout and "bfloat16" not in res.stdout, res.stdout
    assert doc["significant_bits"] == 12
    assert "16-bit source read as 12 significant bits" in res.stdout, res.stdout
    (job,) = job_table(get_settings(home=home)).jobs.list()
    assert (job.spec["precision"], job.spec["significant_bits"]) == ("fp32", 12)
    bad = pelletseg("run", str(small_image), "--home", str(home), "--precision", "fp8")
    assert bad.returncode == 2 and "'fp8' is not one of" in bad.stderr
    bad = pelletseg("run", str(small_image), "--home", str(home), "--significant-bits", "7")
    assert bad.returncode == 2 and "7 is not in the range 8<=x<=16" in bad.stderr


def test_run_on_bad_input_exits_non_zero_with_the_reason(tmp_path, small_image):
    """A file that is no image: fix it and resume; a 12-bit camera's 16-bit TIFF that says
    nothing of its bits: run it again with ``--significant-bits`` (a resume would plan the
    same job)."""
    import numpy as np
    import tifffile

    bad = tmp_path / "scan.tif"
    bad.write_text("not an image")
    dark = tmp_path / "camera12.tif"
    tifffile.imwrite(dark, pyvips.Image.new_from_file(str(small_image)).numpy().astype(np.uint16) << 4)
    home = tmp_path / "home"
    res = pelletseg("run", str(bad), str(dark), "--home", str(home), "--workers", "1")
    assert res.returncode == 1
    out = " ".join(res.stdout.split())
    assert "failed" in out and "scan.tif: not a readable image" in out
    assert "b'" not in res.stdout  # paths as text
    assert "is the bundled demo model" in res.stderr and "pelletseg train" in res.stderr
    assert "camera12.tif: a 16-bit image whose samples all fit in 12 bits" in out, out
    from core.settings import get_settings
    from storage.jobtable import job_table

    table = job_table(get_settings(home=home))
    (refused,) = [j for j in table.jobs.list() if j.source_url.endswith("camera12.tif")]
    assert f"then: pelletseg rerun {refused.id} --significant-bits 12 --home {home}" in out, out
    assert refused.outputs == {"significant_bits_suggested": 12}  # the camera depth
    assert out.count("fix the cause, then: pelletseg resume") == 1  # the unreadable file's
    # ... which runs it (that its labels are then the 8-bit image's, tests/worker/test_stages.py
    # shows for unsigned and signed 16-bit files)
    again = pelletseg("rerun", refused.id, "--significant-bits", "12", "--home", str(home),
                      "--workers", "1", "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stdout + again.stderr
    doc = _check_outputs(tmp_path / "again", 600, 420)
    assert doc["significant_bits"] == 12
    assert "16-bit source read as 12 significant bits" in again.stdout


def test_run_inside_another_checkout_refuses_before_submitting(tmp_path, small_image):
    """Celery would start the local workers from the working directory's worker/tasks.py."""
    other = tmp_path / "old-checkout"
    (other / "worker").mkdir(parents=True)
    (other / "worker" / "tasks.py").write_text("raise SystemExit('the wrong code')\n")
    home = tmp_path / "home"
    res = subprocess.run([sys.executable, "-m", "cli", "run", str(small_image), "--home",
                          str(home), "--workers", "1"], capture_output=True, text=True,
                         timeout=120, cwd=other)
    assert res.returncode == 1, res.stderr
    assert "holds another pelletseg checkout" in res.stderr.replace("\n", " ")
    assert "job " not in res.stdout  # nothing was submitted
    from core.settings import Settings
    from storage.jobtable.table import job_table

    if (home / "pelletseg.db").exists():
        assert job_table(Settings(home=home)).jobs.list() == []


def test_run_of_several_images_makes_one_batch_and_its_table(tmp_path, small_image):
    """Two images: one batch, each one's outputs in its own folder, the table of both side by
    side; a missing third image refuses the lot before any job is created. The second's name
    is as long as a file name may be (255 bytes): its folder's name, job id before it, is cut
    (at a character) to fit, where it crashed every output's copy with "File name too
    long"."""
    import csv

    from core.settings import Settings
    from storage.jobtable.table import job_table

    long_stem = "P-2-" + "ä" * 123 + "x"  # 251 bytes; with ".png" 255
    second = tmp_path / f"{long_stem}.png"
    pyvips.Image.new_from_file(str(small_image)).crop(0, 0, 320, 256).pngsave(str(second))
    home, out = tmp_path / "home", tmp_path / "out"
    res = pelletseg("run", str(small_image), str(second), "--home", str(home), "--workers", "2",
                    "--out", str(out), "--pixel-size-um", "0.5")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("Phase fractions") == 2 and "(2 of 2 images)" in res.stdout
    assert res.stdout.index("sample 1.png (job") < res.stdout.index("Phase fractions")
    # the demo model's warning: said once before submitting, then under each image's table
    assert res.stderr.count("warning: ebc-unet-mnv2 is the bundled demo model") == 1
    assert res.stdout.count("warning: ebc-unet-mnv2 is the bundled demo model") == 2
    assert res.stdout.count("model ebc-unet-mnv2 1 (Unet/mobilenet_v2") == 1  # said once
    jobs = sorted(job_table(Settings(home=home)).jobs.list(), key=lambda j: j.created_at)
    assert len(jobs) == 2 and jobs[0].batch_id == jobs[1].batch_id is not None
    cut = "P-2-" + "ä" * 121  # 246 bytes: 9 + 246 = 255
    first, other = (out / f"{j.id[:8]}-{name}" for j, name in zip(jobs, ["sample 1", cut],
                                                                     strict=True))
    _check_outputs(first, 600, 420)
    _check_outputs(other, 320, 256)
    table = out / f"batch-{jobs[0].batch_id}-results.csv"
    assert f"the images side by side: {table}" in " ".join(res.stdout.split())
    lines = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [line["job_id"] for line in lines] == [j.id for j in jobs]
    assert [(line["status"], line["width_px"], line["pixel_size_um"], line["warnings"])
            for line in lines] == [("succeeded", "600", "0.5", "demo_model"),
                                   ("succeeded", "320", "0.5", "demo_model")]
    fractions = json.loads((other / "fractions.json").read_text())
    assert float(lines[1]["percent_of_image_oxide"]) == fractions["classes"][1]["percent"]

    assert f"pelletseg delete --batch {jobs[0].batch_id} --home {home} frees it" in " ".join(
        res.stdout.split())  # the whole batch ran here: one command for it

    refused = pelletseg("run", str(small_image), str(tmp_path / "nope.tif"), "--home", str(home))
    assert refused.returncode == 2 and "nope.tif: no such file" in refused.stderr
    assert len(job_table(Settings(home=home)).jobs.list()) == 2  # nothing more was submitted


def test_run_of_a_multi_image_ome_tiff_makes_a_job_per_scene(tmp_path, small_image):
    """An OME-TIFF of a thumbnail and two scenes: ``pelletseg run`` makes one job per scene
    (one batch; a folder each, named by scene; a scene column in the table); ``--scene 2``
    one job of that scene."""
    import csv

    import numpy as np
    import tifffile

    from core.settings import Settings
    from storage.jobtable.table import job_table

    rgb = pyvips.Image.new_from_file(str(small_image)).numpy()
    rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
    mount = tmp_path / "mount.ome.tif"
    with tifffile.TiffWriter(mount, ome=True) as tw:
        for h, w in ((24, 32), (256, 320), (200, 288)):
            tw.write(np.ascontiguousarray(rgb[:h, :w]), photometric="rgb",
                     metadata={"axes": "YXS"})
    home, out = tmp_path / "home", tmp_path / "out"
    res = pelletseg("run", str(mount), "--home", str(home), "--workers", "1", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    text = " ".join(res.stdout.split())
    assert f"{mount}: 2 scenes (1, 2), one job each (--scene N reads one)" in text, text
    assert "mount.ome.tif scene 1 (job" in text and "mount.ome.tif scene 2 (job" in text
    jobs = sorted(job_table(Settings(home=home)).jobs.list(), key=lambda j: j.created_at)
    assert [j.spec["scene"] for j in jobs] == [1, 2] and jobs[0].batch_id == jobs[1].batch_id
    for job, (w, h) in zip(jobs, [(320, 256), (288, 200)], strict=True):
        _check_outputs(out / f"{job.id[:8]}-mount.ome-scene{job.spec['scene']}", w, h)
        assert f"job {job.id} queued: {mount.as_uri()} scene {job.spec['scene']}" in text
    lines = list(csv.DictReader((out / f"batch-{jobs[0].batch_id}-results.csv").open()))
    assert [(line["scene"], line["width_px"]) for line in lines] == [("1", "320"), ("2", "288")]
    one = pelletseg("run", str(mount), "--scene", "2", "--home", str(home), "--workers", "1",
                    "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stdout + one.stderr
    _check_outputs(tmp_path / "one", 288, 200)


def test_run_of_more_images_than_a_batch_holds_submits_nothing(tmp_path, small_image):
    from submission.reports import MAX_BATCH

    home = tmp_path / "home"
    res = pelletseg("run", *[str(small_image)] * (MAX_BATCH + 1), "--home", str(home))
    assert res.returncode == 2
    assert f"{MAX_BATCH + 1} images given; one run takes at most {MAX_BATCH}" in res.stderr
    assert not (home / "pelletseg.db").exists()  # not even the stack was readied


@pytest.mark.parametrize("command", [["run", "IMAGE"], ["demo"], ["resume", "JOB"],
                                     ["train", "DATASET", "--epochs", "1"],
                                     ["evaluate", "MODEL", "DATASET"],
                                     ["analyze", "IMAGE", "--classes", "DATASET"]])
def test_an_out_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, small_image,
                                                                         command):
    """Before 2026-12-07 ``pelletseg run IMAGE --out DIR`` with a DIR it may not make ran the
    whole job, then ended in a traceback (PermissionError); every command that writes into an
    --out folder now makes it and writes there once before anything else (and removes what
    it made for that)."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where the folder should be")
    home = tmp_path / "home"
    args = [{"IMAGE": str(small_image), "JOB": "0" * 8, "DATASET": str(small_image),
             "MODEL": "ebc-unet-mnv2"}.get(a, a) for a in command]
    res = pelletseg(*args, "--out", str(blocker / "run-1"), *(
        ["--home", str(home)] if command[0] in ("run", "demo", "resume") else []))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{blocker / 'run-1'}: this folder cannot be made or written to" in " ".join(
        res.stderr.split())
    assert "Traceback" not in res.stderr
    assert not home.exists()  # refused before the stack was readied
    made = tmp_path / "new" / "deeper"
    refused = pelletseg("run", str(tmp_path / "nope.tif"), "--out", str(made), "--home",
                        str(home))
    assert refused.returncode == 2 and "nope.tif: no such file" in refused.stderr  # --out passed
    assert not (tmp_path / "new").exists()  # what the check made is gone again


def test_run_with_a_missing_file_is_a_clear_error(tmp_path):
    res = pelletseg("run", str(tmp_path / "nope.tif"), "--home", str(tmp_path / "home"))
    assert res.returncode == 2 and "nope.tif: no such file" in res.stderr


@pytest.mark.postgres
@pytest.mark.redis
def test_run_switches_to_postgres_and_redis_by_environment(tmp_path, small_image, pg_url):
    if not port_open(6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    env = {"PELLETSEG_DATABASE_URL": pg_url, "PELLETSEG_BROKER_URL": "redis://127.0.0.1:6379/8"}
    res = pelletseg("run", str(small_image), "--home", str(tmp_path / "home"), "--workers", "1",
                    "--out", str(tmp_path / "out"), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    _check_outputs(tmp_path / "out", 600, 420)
    assert not (tmp_path / "home" / "pelletseg.db").exists()  # the job table was PostgreSQL


def test_demo_builds_a_mosaic_and_segments_it(tmp_path):
    res = pelletseg("demo", "--mpx", "0.5", "--home", str(tmp_path / "home"), "--workers", "2",
                    "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    mosaic = next((tmp_path / "home" / "demo").glob("mosaic-*.tif"))
    image = pyvips.Image.new_from_file(str(mosaic))
    _check_outputs(tmp_path / "out", image.width, image.height)
    assert 0.4e6 < image.width * image.height < 0.6e6


def test_failed_job_resumes_after_the_cause_is_fixed(tmp_path, small_image):
    """A batch of two images, one of them broken: the run fails that one; once the file is
    fixed, ``pelletseg resume --batch`` redoes it alone, with the batch's outputs and table."""
    import csv
    import re
    import shutil

    source = tmp_path / "pellet.png"
    source.write_text("the upload was interrupted")
    home, out = str(tmp_path / "home"), tmp_path / "out"
    failed = pelletseg("run", str(small_image), str(source), "--home", home, "--workers", "1")
    assert failed.returncode == 1 and "pelletseg resume" in failed.stdout
    job_id = re.search(r"job ([0-9a-f-]{36}) failed", failed.stdout).group(1)
    table = re.search(r"batch-([0-9a-f-]{36})-results.csv", failed.stdout)
    batch_id = table.group(1)
    assert f"once fixed, all of them at once: pelletseg resume --batch {batch_id} --home " \
        f"{home}" in " ".join(failed.stdout.split())
    shutil.copyfile(small_image, source)  # the lab uploads the image again
    res = pelletseg("resume", "--batch", batch_id, "--home", home, "--workers", "1", "--out",
                    str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("Phase fractions") == 1 and "(1 of 1 images)" in res.stdout
    _check_outputs(out / f"{job_id[:8]}-pellet", 600, 420)
    lines = list(csv.DictReader((out / f"batch-{batch_id}-results.csv").open(encoding="utf-8")))
    assert [line["status"] for line in lines] == ["succeeded", "succeeded"]
    assert lines[1]["job_id"] == job_id
    # only the resumed job was copied out: the command frees it alone, not the batch
    flat = " ".join(res.stdout.split())
    assert f"pelletseg delete {job_id} --home {home} frees it" in flat and "--batch" not in \
        flat.split("the store keeps")[1]
    again = pelletseg("resume", job_id, "--home", home, "--workers", "0")
    assert again.returncode == 2 and "only failed, cancelled or interrupted jobs" in again.stderr
    again = pelletseg("resume", "--batch", batch_id, "--home", home, "--workers", "0")
    assert again.returncode == 2
    assert "has no failed or interrupted job to resume (2 succeeded)" in again.stderr
    neither = pelletseg("resume", "--home", home)
    assert neither.returncode == 2 and "give a JOB_ID or --batch ID" in neither.stderr


def test_run_with_an_unknown_model_fails_at_once_with_the_apis_message(tmp_path, small_image):
    """One submission service: the CLI refuses before starting any worker, with the 422
    detail the API gives for the same request on the same stack."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.settings import Settings

    home = tmp_path / "home"
    res = pelletseg("run", str(small_image), "--model", "no-such-model", "--home", str(home),
                    "--workers", "2", timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    cli_message = res.stderr.strip().splitlines()[-1].removeprefix("error: ")
    assert "model 'no-such-model' is not registered" in cli_message
    assert not (home / "logs").exists()  # no worker was started

    # the API reads file sources only from its source roots (tests/api/test_source_roots.py)
    settings = Settings(home=home, api_auth=False, source_roots=[str(small_image.parent)])
    api = TestClient(create_app(settings))
    r = api.post("/v1/jobs", json={"source_url": str(small_image), "model": "no-such-model"})
    assert r.status_code == 422 and r.json()["detail"] == cli_message


def test_run_takes_a_model_version_as_name_colon_version(tmp_path, small_image):
    """``--model NAME:VERSION`` names one registered version (as ``evaluate`` and ``train
    --from`` take it); an unregistered version is refused before any worker starts."""
    home = tmp_path / "home"
    res = pelletseg("run", str(small_image), "--model", "ebc-unet-mnv2:999", "--home", str(home),
                    "--workers", "2", timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    message = res.stderr.strip().splitlines()[-1]
    assert "ebc-unet-mnv2" in message and "999" in message and "not registered" in message
    assert "ebc-unet-mnv2:999" not in message  # split into name and version, not one name
    assert not (home / "logs").exists()


@pytest.mark.parametrize("a_worker_runs", [False, True])
def test_run_without_local_workers_says_when_none_is_running(table, monkeypatch, a_worker_runs):
    """``pelletseg run --workers 0`` with no worker anywhere showed 'queued' for ever; now, once
    :data:`cli.run.NO_WORKER_GRACE` has passed with no live heartbeat in the job table, it says
    so and how to start one (once), and says nothing while a worker runs."""
    import io
    import time

    from rich.console import Console

    from cli import run as run_module
    from core.spec import JobSpec
    from core.states import JobStatus

    out = io.StringIO()
    monkeypatch.setattr(run_module, "console", Console(file=out, width=200))
    monkeypatch.setattr(run_module, "NO_WORKER_GRACE", 0.2)
    if a_worker_runs:
        table.heartbeats.register("elsewhere:1", interval=60)
    job = table.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif",
                                    model="m"))
    started = time.monotonic()

    def cancel_later():  # the test's end: a job that ends
        if time.monotonic() - started > 1.0:
            table.jobs.transition(job.id, JobStatus.CANCELLED)

    ended = run_module.follow(table, [job.id], None, poll=0.05, tick=cancel_later,
                              tick_every=0.1, no_worker_hint="HINT: start a worker")
    assert ended[0].status == JobStatus.CANCELLED
    assert out.getvalue().count("HINT: start a worker") == (0 if a_worker_runs else 1)
