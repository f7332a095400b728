"""Shared fixtures: job tables on SQLite and on the real PostgreSQL, broker URLs for the
real Redis and RabbitMQ, and the shared real data (skipped cleanly where absent)."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from storage.db import make_engine, upgrade
from storage.jobs import JobStore

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something listens on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (skips where absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: real-data tests need ../shared beside the repo")
    return SHARED_DATA


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A migrated, empty job table: SQLite and the real PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, rows, models CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def job_store(db_url):
    """A :class:`JobStore` over :func:`db_url`."""
    engine = make_engine(db_url)
    yield JobStore(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database on the local server (skips where absent)."""
    if not port_open(6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/7"
