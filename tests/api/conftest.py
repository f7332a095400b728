"""Fixtures of the HTTP API tests: a migrated SQLite job table and embedded broker under
tmp_path, an API key, a TestClient sending it, and helpers that read the broker's messages and
put jobs into given states through the JobStore."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from api.app import create_app
from storage.apikeys import ApiKeyStore
from storage.db import cached_engine, upgrade
from storage.jobs import JobStore
from storage.models import Job
from storage.settings import Settings
from storage.spec import JobSpec
from storage.states import JobStatus

MODEL = "test-model"
WEBHOOK_SECRET = "test-webhook-secret"


@dataclass
class Api:
    """A TestClient authenticated with ``key``, and the stack behind it."""

    client: TestClient
    settings: Settings
    jobs: JobStore
    keys: ApiKeyStore
    key: str


def make_settings(tmp_path, **overrides) -> Settings:
    """Settings with everything under ``tmp_path/home``; the job table migrated; a webhook
    signing secret (:data:`WEBHOOK_SECRET`) unless ``overrides`` names one."""
    overrides.setdefault("webhook_secret", WEBHOOK_SECRET)
    settings = Settings(home=tmp_path / "home", **overrides)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    return settings


def make_api(settings: Settings) -> Api:
    """An :class:`Api` over ``settings`` with a fresh key and a registered test model."""
    engine = cached_engine(settings.resolved_database_url)
    jobs, keys = JobStore(engine), ApiKeyStore(engine)
    jobs.register_model(name=MODEL, version="1", sha256="a" * 64, architecture="Unet",
                        encoder="resnet34", classes=[{"index": 0, "name": "pore"}])
    _, key = keys.create_key("tests")
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})
    return Api(client=client, settings=settings, jobs=jobs, keys=keys, key=key)


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


def new_job(jobs: JobStore, labels: dict | None = None) -> Job:
    """A queued job (no message sent)."""
    return jobs.create_job(JobSpec(source_url="file:///x.tif", model=MODEL, labels=labels or {}))


def running_job(jobs: JobStore, rows: int = 3, done: tuple[int, ...] = (), width: int = 100) -> Job:
    """A planned, running job of ``rows`` rows of 10 px, the rows in ``done`` completed."""
    job = new_job(jobs)
    assert jobs.transition_job(job.id, JobStatus.PLANNING)
    jobs.insert_rows(job.id, [(i * 10, i * 10 + 10) for i in range(rows)])
    assert jobs.transition_job(job.id, JobStatus.RUNNING, width=width, height=rows * 10,
                               rows_total=rows)
    for index in done:
        assert jobs.claim_row(job.id, index, "w", lease_seconds=60).claimed
        jobs.complete_row(job.id, index, counts=[width * 10], checksum="c",
                          blob_key=f"jobs/{job.id}/rows/{index:05d}.tif", seconds=0.1)
    return jobs.get_job(job.id)
