"""Each worker image installs what its workers import.

A job runs through two real Celery workers whose processes can import only the distributions
their image's ``pip install`` brings (pyproject's base install and the image's extras, with
everything those require): the planner and reducer in one limited to ``.[stages,formats]``
(the CPU workers' image, deploy/Dockerfile.worker-cpu: no torch), the rows in one limited to
``.[worker,formats]`` (deploy/Dockerfile.worker); then the API, limited to the base install
(deploy/Dockerfile.api), serves the job's results, files and viewer tiles. An import that the
project's own code makes of anything else is recorded, and the job must succeed with every
output.

Before 2026-12-08 matplotlib came only with ``[train]``: the deployed reducers had none, and
``microstructure.report`` quietly left ``radial_profiles.png`` out of every job (the dev install,
which has every extra, made it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.states import JOB_TERMINAL, JobStatus
from queues.app import make_celery
from storage.blobs.layout import OUTPUT_FILES, output_key
from storage.jobtable.engine import upgrade
from submission import SubmissionService
from tests.deploy.conftest import ROOT
from tests.worker.conftest import make_settings
from worker.context import WorkerContext
from worker.local import settings_env, worker_command

#: The project's own distribution: its requirements are read from pyproject.toml (the
#: installed metadata of an editable install is as old as its last ``pip install``).
PROJECT = "pelletseg"

#: Installed at start-up in every worker process of the test (PYTHONPATH): the path finder no
#: longer finds the top-level modules of distributions outside the image, and each such import
#: the project's own code makes is recorded (an optional import a library tries is its own
#: business).
SITECUSTOMIZE = textwrap.dedent("""
    import json, os, sys
    from importlib.machinery import PathFinder
    _config = json.load(open(os.environ["PELLETSEG_TEST_IMAGE_IMPORTS"]))
    _BLOCKED, _ROOT, _LOG = set(_config["blocked"]), _config["root"], _config["log"]

    def _caller():
        frame = sys._getframe(2)  # past find_spec
        while frame is not None and (frame.f_code.co_filename.startswith("<frozen")
                                     or "importlib" in frame.f_code.co_filename):
            frame = frame.f_back
        return ("?", 0) if frame is None else (frame.f_code.co_filename, frame.f_lineno)

    class _ImageOnly:
        \"\"\"The path finder, blind to the top-level modules of the image's absent
        distributions (so ``find_spec`` says None and ``import`` raises ModuleNotFoundError,
        as where they are not installed).\"\"\"

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in _BLOCKED:
                where, line = _caller()
                if where.startswith(_ROOT) and "site-packages" not in where:
                    with open(_LOG, "a") as log:
                        log.write(f"{name} imported by {where}:{line}\\n")
                return None
            return PathFinder.find_spec(name, path, target)

        def __getattr__(self, attr):
            return getattr(PathFinder, attr)

    sys.meta_path[:] = [_ImageOnly() if f is PathFinder else f for f in sys.meta_path]
""")


def _own_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


def image_distributions(extras: tuple[str, ...]) -> set[str]:
    """Normalised names of the distributions ``pip install ".[extras]"`` brings, from the
    installed metadata of each requirement (markers evaluated here, extras followed)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    # (a requirement, the extras asked of the distribution that lists it: its marker's)
    todo = [(r, frozenset()) for r in _own_requirements(extras)]
    while todo:
        req, listed_with = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e})
                                              for e in (listed_with or {""})):
            continue
        name, wanted = canonicalize_name(req.name), frozenset(req.extras)
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        if name == PROJECT:  # pelletseg[stages] inside [worker]
            todo += [(r, frozenset()) for r in _own_requirements(tuple(req.extras))]
            continue
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [(Requirement(r), wanted) for r in requires]
    return {name for name, _ in seen} | {PROJECT}


def blocked_modules(extras: tuple[str, ...]) -> list[str]:
    """Top-level module names installed here whose every distribution is outside the image."""
    inside = image_distributions(extras)
    return sorted(top for top, dists in metadata.packages_distributions().items()
                  if not any(canonicalize_name(d) in inside for d in dists))


def _limited_env(settings, extras, tmp_path, name):
    """``(env, log)``: the environment of a process for ``settings`` limited to ``extras``,
    and the file where its refused imports are recorded."""
    folder = tmp_path / f"site-{name}"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / f"refused-{name}.log"
    config = tmp_path / f"image-{name}.json"
    config.write_text(json.dumps({"blocked": blocked_modules(extras), "root": str(ROOT),
                                  "log": str(log)}))
    env = settings_env(settings)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    env["PELLETSEG_TEST_IMAGE_IMPORTS"] = str(config)
    return env, log


def _limited_worker(settings, queues, extras, tmp_path, name, threads=0):
    """``(argv, env, log)`` of a ``celery worker`` for ``queues`` limited to ``extras``
    (``threads``: its pool's, as :func:`worker.local.worker_command` takes it)."""
    argv, worker_env = worker_command(settings, queues, f"{name}@%h", threads=threads)
    env, log = _limited_env(settings, extras, tmp_path, name)
    return argv, {**worker_env, **env}, log


def test_the_cpu_image_has_no_torch_and_each_image_what_it_imports():
    cpu = image_distributions(("stages", "formats"))
    assert not cpu & {"torch", "torchvision", "segmentation-models-pytorch", "timm",
                      "openvino", "onnxruntime", "onnx"}
    assert {"scipy", "matplotlib", "pyvips", "openslide-python", "pylibczirw"} <= cpu
    assert cpu < image_distributions(("worker", "formats"))  # the rows' image has it all
    assert {"torch", "openvino"} <= set(blocked_modules(("stages", "formats")))
    assert "matplotlib" not in blocked_modules(("stages",))


@pytest.mark.parametrize("stream_reduce", [False, True], ids=["reducer", "streaming stitcher"])
def test_a_job_runs_on_workers_that_import_only_what_their_image_installs(
        tmp_path, tiny_package, micrograph, stream_reduce):
    """With ``PELLETSEG_STREAM_REDUCE`` the CPU worker runs the job's streaming stitcher too
    (a threads pool, as the deployments give it)."""
    settings = make_settings(tmp_path / "home", stream_reduce=stream_reduce)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    ctx = WorkerContext.from_settings(settings, enqueue=lambda *a: None)
    ctx.models.publish(tiny_package)
    workers = [_limited_worker(settings, ["plan", "reduce"], ("stages", "formats"), tmp_path,
                               "cpu", threads=2 if stream_reduce else 0),
               _limited_worker(settings, ["rows"], ("worker", "formats"), tmp_path, "rows")]
    procs = []
    for i, (argv, env, _) in enumerate(workers):
        with open(tmp_path / f"worker-{i}.log", "wb") as out:
            procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out,
                                          stderr=subprocess.STDOUT))
    try:
        svc = SubmissionService(settings, app=make_celery(settings))
        job = svc.submit(svc.build_spec(str(micrograph)))
        deadline = time.monotonic() + 300
        while ctx.table.jobs.get(job.id).status not in JOB_TERMINAL:
            assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    logs = "\n".join((tmp_path / f"worker-{i}.log").read_text()[-2000:] for i in range(2))
    refused = {name: log.read_text() if log.exists() else "" for (_, _, log), name
               in zip(workers, ("cpu", "rows"), strict=True)}
    assert refused == {"cpu": "", "rows": ""}, f"imports outside the image: {refused}"
    done = ctx.table.jobs.get(job.id)
    assert done.status == JobStatus.SUCCEEDED, f"{done.error}\n{logs}"
    for name in OUTPUT_FILES:
        assert ctx.blobs.exists(output_key(job.id, name)), f"{name} missing\n{logs}"
    assert "pelletseg.plan_job" in (tmp_path / "worker-0.log").read_text()
    assert "pelletseg.segment_row" in (tmp_path / "worker-1.log").read_text()
    assert done.outputs.get("streamed", False) is stream_reduce
    if not stream_reduce:
        _api_serves_the_job_with_the_base_install(settings, job.id, tmp_path)


#: Run by :func:`_api_serves_the_job_with_the_base_install` in a process limited to the API
#: image's install: every route that reads a succeeded job's outputs.
API_PROBE = textwrap.dedent("""
    import json, re, sys
    from fastapi.testclient import TestClient
    from api.app import create_app
    from core.settings import Settings
    from storage.blobs.layout import OUTPUT_FILES, OPTIONAL_OUTPUTS
    job = sys.argv[1]
    client = TestClient(create_app(Settings()))
    paths = [f"/v1/jobs/{job}/{p}" for p in ("results", "results.csv", "microstructure", "rows")]
    paths += [f"/v1/jobs/{job}/files/{name}" for name in (*OUTPUT_FILES, *OPTIONAL_OUTPUTS)]
    for layer in ("source", "labels", "overlay", "confidence"):
        dzi = client.get(f"/v1/jobs/{job}/tiles/{layer}.dzi")
        paths.append(f"/v1/jobs/{job}/tiles/{layer}.dzi")
        ext = re.search(r'Format="(\\w+)"', dzi.text).group(1)
        paths.append(f"/v1/jobs/{job}/tiles/{layer}_files/10/0_0.{ext}")
    print(json.dumps({p: client.get(p).status_code for p in paths}))
""")


def _api_serves_the_job_with_the_base_install(settings, job_id, tmp_path):
    """The API image (``pip install .``) serves the job's results, files, microstructure
    and viewer tiles in a process that can import nothing else."""
    env, refused = _limited_env(settings, (), tmp_path, "api")
    env["PELLETSEG_API_AUTH"] = "false"
    proc = subprocess.run([sys.executable, "-c", API_PROBE, job_id], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(answers.values()) == {200}, answers
    assert not refused.exists(), refused.read_text()


def test_a_worker_of_the_cpu_image_refuses_the_rows_queue_saying_what_to_run(tmp_path):
    """A rows worker started from the CPU workers' image would fail every row it took (no
    torch); it stops at start instead, naming the image to run rows on and the queues to
    give this one."""
    settings = make_settings(tmp_path / "home")
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    argv, env, refused = _limited_worker(settings, ["plan", "rows", "reduce"],
                                         ("stages", "formats"), tmp_path, "cpu")
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode != 0
    said = " ".join(proc.stderr.split())
    assert "takes the rows queue" in said, said[-2000:]
    assert "cannot import torch, segmentation_models_pytorch" in said
    assert "pip install '.[worker]'" in said and "(deploy/Dockerfile.worker)" in said
    assert "-Q plan,reduce" in said
    assert "celery@" not in proc.stdout  # no banner: it never started consuming
    # only the start-up check looked for torch (find_spec), and nothing else was imported
    looked = {line.split(":")[0] for line in refused.read_text().splitlines()}
    assert looked == {f"{name} imported by {ROOT / 'worker' / 'tasks.py'}"
                      for name in ("torch", "segmentation_models_pytorch")}


#: Run by the test below in a process limited to the CPU workers' image: the planner's
#: conversion of each source to the model-ready TIFF, and a row's read of it.
CONVERT_PROBE = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    from imaging.formats import source_info, write_model_ready
    from imaging.reading import open_image, read_rows
    done = {}
    for name in sys.argv[2:]:
        src, out = Path(sys.argv[1]) / name, Path(sys.argv[1]) / (name + ".ready.tif")
        info = write_model_ready(src, out, max_pixels=10**8, nodata_path=out.with_suffix(".nd"))
        pixels = read_rows(open_image(out, max_pixels=10**8), 0, info.height)
        done[name] = hashlib.sha256(pixels.tobytes()).hexdigest()
    print(json.dumps(done))
""")


def test_the_cpu_image_converts_every_source_format_as_the_full_install_does(tmp_path):
    """The planner's conversion (CZI, OpenSlide, OME-TIFF pyramid, planar 16-bit, LZW and JPEG
    tiles, signed and float TIFF, PNG) in a process limited to ``.[stages,formats]`` gives the
    pixels it gives in the full install, and imports nothing else: tifffile reads structure
    only, libvips, pylibCZIrw and OpenSlide the pixels."""
    import hashlib

    import numpy as np
    import pyvips
    import tifffile
    from pylibCZIrw import czi

    from imaging.formats import write_model_ready
    from imaging.reading import open_image, read_rows

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    writers = {
        "pyramid.ome.tif": lambda p: _ome_pyramid(tifffile, p, a),
        "planar16.ome.tif": lambda p: tifffile.imwrite(
            p, rng.integers(0, 65536, (3, 300, 420), dtype=np.uint16), ome=True,
            metadata={"axes": "CYX"}),
        "lzw.ome.tif": lambda p: tifffile.imwrite(p, a, ome=True, photometric="rgb",
                                                  tile=(256, 256), compression="lzw"),
        "jpeg.tif": lambda p: tifffile.imwrite(p, a, photometric="rgb", tile=(256, 256),
                                               compression="jpeg"),
        "signed.tif": lambda p: tifffile.imwrite(
            p, rng.integers(-32768, 32768, (300, 420), dtype=np.int16)),
        "float.tif": lambda p: tifffile.imwrite(p, rng.random((300, 420), dtype=np.float32),
                                                imagej=True),
        "slide.svs": lambda p: tifffile.imwrite(
            p, a, tile=(256, 256), photometric="rgb", compression="zlib", metadata=None,
            description="Aperio Image Library v12.0.0\r\n420x300 [0,0 420x300] (256x256) RGB"
                        "|AppMag = 20|MPP = 0.4990"),
        "mosaic.czi": lambda p: _czi(czi, p, a),
        "rgb.png": lambda p: pyvips.Image.new_from_array(a).pngsave(str(p)),
    }
    expected = {}
    for name, write in writers.items():
        write(tmp_path / name)
        out = tmp_path / f"full-{name}.tif"
        info = write_model_ready(tmp_path / name, out, max_pixels=10**8)
        pixels = read_rows(open_image(out, max_pixels=10**8), 0, info.height)
        expected[name] = hashlib.sha256(pixels.tobytes()).hexdigest()
    settings = make_settings(tmp_path / "home")
    env, refused = _limited_env(settings, ("stages", "formats"), tmp_path, "cpu")
    proc = subprocess.run([sys.executable, "-c", CONVERT_PROBE, str(tmp_path), *writers],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected
    assert not refused.exists(), refused.read_text()


def _ome_pyramid(tifffile, path, a):
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(a, tile=(256, 256), photometric="rgb", subifds=1, metadata={"axes": "YXS"})
        tw.write(a[::2, ::2], tile=(256, 256), photometric="rgb", subfiletype=1)


def _czi(czi, path, a):
    with czi.create_czi(str(path), exist_ok=True) as w:  # two tiles, BGR as CZI stores it
        w.write(a[:, :210, ::-1].copy(), location=(100, 40))
        w.write(a[:, 210:, ::-1].copy(), location=(310, 40))


def test_pelletseg_run_on_an_install_without_the_model_stack_says_why_and_keeps_the_job(
        tmp_path, micrograph):
    """``pelletseg run`` where only ``pip install .`` is installed (an API client's install):
    its local workers stop at start (no torch for the rows), and the command says why, in
    one message with the end of their logs, and leaves the job ``interrupted`` to resume
    once the model stack is installed; before 2026-12-08 it ended in a traceback."""
    from core.states import JobStatus as Status
    from storage.jobtable.table import job_table

    settings = make_settings(tmp_path / "home")
    env, _ = _limited_env(settings, (), tmp_path, "client")
    pelletseg = Path(sys.executable).with_name("pelletseg")  # the console script
    proc = subprocess.run([str(pelletseg), "run", str(micrograph), "--model", "ebc-unet-mnv2",
                           "--workers", "1", "--home", str(tmp_path / "home")], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    assert "error: the local workers exited before the jobs ended" in out
    assert "cannot import torch" in out and "pip install '.[worker]'" in out
    assert "pelletseg resume" in out
    [job] = job_table(settings).jobs.list()
    assert job.status == Status.INTERRUPTED


def test_a_command_needing_an_extra_this_install_lacks_names_it(tmp_path):
    """``pelletseg bench`` with ``pip install .`` alone: one line naming the extra to install
    (``cli.main.Commands``), not a ModuleNotFoundError traceback."""
    from cli.main import extra_providing

    assert [extra_providing(m) for m in ("torch", "scipy", "monai", "h5py", "pylibCZIrw")] == [
        "worker", "stages", "bench", "train", "formats"]
    assert extra_providing("no_such_module") is None
    settings = make_settings(tmp_path / "home")
    env, _ = _limited_env(settings, (), tmp_path, "client")
    pelletseg = Path(sys.executable).with_name("pelletseg")
    proc = subprocess.run([str(pelletseg), "bench", "--quick", "--rss-sizes", "",
                           "--work", str(tmp_path / "work"), "--json", str(tmp_path / "b.json")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    # the command's extra (it holds [worker]), not only the first missing package's
    assert ("pelletseg bench needs torch, which this install lacks: "
            "pip install 'pelletseg[bench]'") in out
