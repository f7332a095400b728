"""Fixtures of the HTTP API tests: a migrated SQLite job table and embedded broker under
tmp_path, an API key, a TestClient sending it, and helpers that read the broker's messages and
put jobs into given states through the JobTable."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from api.app import create_app
from core.settings import Settings
from core.spec import JobSpec
from core.states import JobStatus
from models import MODEL_JSON, ModelPackage
from storage.blobs import BlobStore
from storage.jobtable import Job, JobTable, cached_engine, upgrade
from storage.jobtable.api_keys import ApiKeys

MODEL = "test-model"
WEBHOOK_SECRET = "test-webhook-secret"


@dataclass
class Api:
    """A TestClient authenticated with ``key``, and the stack behind it."""

    client: TestClient
    settings: Settings
    table: JobTable
    keys: ApiKeys
    key: str


def make_settings(tmp_path, **overrides) -> Settings:
    """Settings with everything under ``tmp_path/home``; the job table migrated; a webhook
    signing secret (:data:`WEBHOOK_SECRET`) unless ``overrides`` names one."""
    overrides.setdefault("webhook_secret", WEBHOOK_SECRET)
    settings = Settings(home=tmp_path / "home", **overrides)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    return settings


def register_model(settings: Settings, name: str = MODEL, **meta) -> None:
    """Register a model ``name`` version 1 with its ``model.json`` in the store (no weights:
    the API reads only the package's metadata; the weights' sha256 is a placeholder)."""
    classes = meta.pop("classes", [{"index": 0, "name": "pore", "rgb": [170, 0, 0],
                                    "label_value": 0}])
    package = ModelPackage(name=name, version="1", classes=classes, weights_sha256="a" * 64,
                           **{"tile_size": 1024, "halo": 128, **meta})
    BlobStore(settings.resolved_storage_url).put_bytes(
        f"models/{name}/1/{MODEL_JSON}", package.model_dump_json().encode())
    JobTable(cached_engine(settings.resolved_database_url)).models.register(
        name=name, version="1", sha256=package.weights_sha256, architecture="Unet",
        encoder="resnet34", classes=[c.model_dump(mode="json") for c in package.classes])


def make_api(settings: Settings) -> Api:
    """An :class:`Api` over ``settings`` with a fresh key and a registered test model."""
    table = JobTable(cached_engine(settings.resolved_database_url))
    keys = table.api_keys
    register_model(settings)
    _, key = keys.create("tests")
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})
    return Api(client=client, settings=settings, table=table, keys=keys, key=key)


@pytest.fixture
def api_settings(tmp_path) -> Settings:
    """Embedded stack settings under tmp_path (SQLite job table, sqla+sqlite broker)."""
    return make_settings(tmp_path, default_model=MODEL)


@pytest.fixture
def api(api_settings) -> Api:
    """An authenticated client of an app over :func:`api_settings`."""
    return make_api(api_settings)


def drain_tasks(settings: Settings) -> list[tuple]:
    """Messages waiting in the embedded broker as ``(task_name, *args)``, removed from it."""
    engine = create_engine(settings.resolved_broker_url.removeprefix("sqla+"))
    try:
        with engine.begin() as conn:
            payloads = [r[0] for r in conn.execute(
                text("SELECT payload FROM kombu_message ORDER BY id"))]
            conn.execute(text("DELETE FROM kombu_message"))
    except OperationalError:  # no message was ever sent: the tables do not exist yet
        payloads = []
    finally:
        engine.dispose()
    tasks = []
    for payload in payloads:
        message = json.loads(payload)
        args = json.loads(base64.b64decode(message["body"]))[0]
        tasks.append((message["headers"]["task"], *args))
    return tasks


def new_job(table: JobTable, labels: dict | None = None) -> Job:
    """A queued job (no message sent)."""
    return table.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif",
                                     model=MODEL, labels=labels or {}))


#: What :func:`running_job` records as how its done rows were computed.
ROW_INFERENCE = {"runtime": "openvino", "device": "cpu", "precision": "bf16", "f32_convs": 9,
                 "tta": "none"}


def running_job(table: JobTable, rows: int = 3, done: tuple[int, ...] = (), width: int = 100,
                job: Job | None = None) -> Job:
    """A planned, running job of ``rows`` rows of 10 px, the rows in ``done`` completed: ``job``
    (a queued job) or a new one."""
    job = job or new_job(table)
    assert table.jobs.transition(job.id, JobStatus.PLANNING)
    table.rows.insert(job.id, [(i * 10, i * 10 + 10) for i in range(rows)])
    assert table.jobs.transition(job.id, JobStatus.RUNNING, width=width, height=rows * 10,
                               rows_total=rows)
    for index in done:
        assert table.rows.claim(job.id, index, "w", lease_seconds=60).claimed
        table.rows.complete(job.id, index, counts=[width * 10], checksum="c",
                          blob_key=f"jobs/{job.id}/rows/{index:05d}.tif", seconds=0.1,
                          inference=ROW_INFERENCE)
    return table.jobs.get(job.id)
