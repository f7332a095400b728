"""Shared fixtures: job tables on SQLite and on the real PostgreSQL, broker URLs for the
real Redis and RabbitMQ, the shared real data (skipped cleanly where absent), a tiny
random-init model package and a real micrograph crop shipped with the repository."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import pyvips
from sqlalchemy import create_engine, text

from imaging.mosaic import SAMPLES
from storage.jobtable.engine import make_engine, upgrade
from storage.jobtable.table import JobTable

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
#: Classes of the tiny test model package (:func:`tiny_package`).
CLASSES = [
    {"index": 0, "name": "background", "rgb": (40, 40, 40), "label_value": 0, "pellet": False},
    {"index": 1, "name": "oxide", "rgb": (255, 170, 0), "label_value": 1},
    {"index": 2, "name": "crack", "rgb": (0, 85, 255), "label_value": 2},
]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something listens on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session", autouse=True)
def shared_export_cache(tmp_path_factory):
    """One folder of exported graphs for the whole run: ``PELLETSEG_EXPORT_CACHE_DIR``, read by
    every ``Settings`` and inherited by every worker a test starts. Graphs are keyed by weights
    sha256 and export recipe and checked on every load, so tests may share them as the homes
    of one machine may: each model is exported once per run instead of once per home (124
    exports, 188 s of the suite's summed test time on 2026-12-07). Shared by this run's xdist
    workers, never by another run; tests of the default location pass ``export_cache_dir``."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "exported"
    folder.mkdir(exist_ok=True)
    saved = os.environ.get("PELLETSEG_EXPORT_CACHE_DIR")
    os.environ["PELLETSEG_EXPORT_CACHE_DIR"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("PELLETSEG_EXPORT_CACHE_DIR", None)
    else:
        os.environ["PELLETSEG_EXPORT_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (skips where absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: real-data tests need ../shared beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """A random-init UNet (ResNet-18 encoder, depth 3) package at tile 128 px, halo 16 px:
    fast on CPU, real smp code."""
    import segmentation_models_pytorch as smp
    import torch

    from worker.engine.network import write_package

    torch.manual_seed(0)
    params = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    model = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None,
                             in_channels=3, classes=3, **params)
    folder = tmp_path_factory.mktemp("pkg") / "tiny" / "1"
    write_package(folder, model, dict(
        name="tiny", version="1", architecture="Unet", encoder="resnet18", arch_params=params,
        classes=CLASSES, tile_size=128, halo=16,
    ))
    return folder


@pytest.fixture(scope="session")
def micrograph(tmp_path_factory) -> Path:
    """A 700 x 500 px crop of a real SEM micrograph (NASA EBC, shipped in imaging/samples)."""
    src = sorted(SAMPLES.glob("*.png"))[0]
    out = tmp_path_factory.mktemp("img") / "crop.png"
    pyvips.Image.new_from_file(str(src)).crop(100, 200, 700, 500).pngsave(str(out))
    return out


@pytest.fixture(scope="session")
def pg_url():
    """URL of a fresh, migrated PostgreSQL database on 127.0.0.1:5432 (dropped at the end)."""
    if not port_open(5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"pelletseg_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """URL of a fresh, migrated SQLite job table."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    return url


@pytest.fixture
def empty_pg_url(pg_url) -> str:
    """:func:`pg_url` (one database per session) with its jobs, rows, models and API keys
    emptied, and what references them."""
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, rows, models, api_keys CASCADE"))
    engine.dispose()
    return pg_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A migrated, empty job table: SQLite and the real PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("empty_pg_url")


@pytest.fixture
def table(db_url):
    """A :class:`JobTable` over :func:`db_url`."""
    engine = make_engine(db_url)
    yield JobTable(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database on the local server (skips where absent)."""
    if not port_open(6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/7"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(**env):
    """A private ``moto_server`` (S3, SQS, IAM, ...) on a free port on 127.0.0.1, with extra
    environment ``env`` (e.g. ``MOTO_IAM_LOAD_MANAGED_POLICIES="true"``); yields its endpoint
    URL and stops it afterwards. Skips where moto's server is not installed."""
    exe = shutil.which("moto_server") or str(Path(os.sys.executable).with_name("moto_server"))
    if not Path(exe).exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not port_open(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("moto_server did not start")
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server (S3, SQS) on 127.0.0.1, started for the test session; AWS variables point
    boto3/s3fs at it. Yields the endpoint URL."""
    with moto_server() as endpoint:
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield endpoint
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(moto_endpoint) -> str:
    """A fresh, empty bucket on the moto server; yields its name."""
    import boto3

    name = f"pelletseg-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def wait_for(predicate, timeout: float, what, poll: float = 0.1):
    """Poll ``predicate()`` until it returns something truthy, and return that.

    ``what`` names the awaited event in the failure message; a callable is called only then,
    so the message can show the state the wait ended in.

    Raises:
        AssertionError: ``what`` did not happen within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"{what() if callable(what) else what} within {timeout} s")


def local_upload(uploads, data: bytes = b"an uploaded pellet", *, complete: bool = True,
                 age_days: float = 0.0):
    """An upload of ``data`` (one part) in a local store's :class:`storage.blobs.UploadStore`,
    completed unless told otherwise, its manifest dated ``age_days`` back (created and, if
    complete, completed then); returns its manifest."""
    from datetime import timedelta

    from storage.jobtable.tables import utcnow

    manifest = uploads.create("pellet.tif", len(data))
    with uploads.open_part(manifest, 1) as part:
        part.write(data)
        part.commit()
    if complete:
        manifest = uploads.complete(manifest)
    if age_days:
        then = utcnow() - timedelta(days=age_days)
        manifest = manifest.model_copy(update={
            "created_at": then, "completed_at": then if complete else None})
        uploads.blobs.put_bytes(f"uploads/{manifest.id}/.manifest.json",
                                manifest.model_dump_json().encode())
    return manifest
