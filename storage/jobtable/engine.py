"""Engine creation and schema migrations for the job table (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """Create an engine for the job table.

    SQLite files get WAL journaling, a 30 s busy timeout and foreign keys so that several worker
    processes can share one file; PostgreSQL gets ``pool_pre_ping`` so dropped connections are
    replaced instead of failing a task.

    Raises:
        StorageError: the URL cannot be parsed or its driver is not installed.
    """
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            # Plain postgresql:// -> psycopg 3, the driver pelletseg installs.
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, pool_recycle=1800)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise StorageError(f"cannot use database URL {url!r}: {e}") from e


@lru_cache(maxsize=8)
def cached_engine(url: str) -> Engine:
    """One engine per URL per process (workers call this on every task)."""
    return make_engine(url)


@contextmanager
def session_scope(sessions: sessionmaker, what: str) -> Iterator[Session]:
    """One transaction in an ORM session, committed on success.

    Raises:
        StorageError: any SQLAlchemy error, chained, with ``what`` (e.g. "job table at ...")
            in the message.
    """
    try:
        with sessions.begin() as session:
            yield session
    except SQLAlchemyError as e:
        raise StorageError(f"{what}: {e}") from e


def as_utc(record, *attrs: str):
    """Mark the naive datetimes SQLite returns on ``record.<attrs>`` as UTC (every datetime
    pelletseg stores is UTC), in place; returns ``record``."""
    for attr in attrs:
        value = getattr(record, attr)
        if value is not None and value.tzinfo is None:
            setattr(record, attr, value.replace(tzinfo=UTC))
    return record


def alembic_config(url: str) -> Config:
    """Alembic configuration pointing at pelletseg's migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (default: the newest) to the database at ``url``.

    Raises:
        StorageError: the database is unreachable or a migration fails.
    """
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as e:
        raise StorageError(f"migrating the job table at {engine.url!r} failed: {e}") from e
    finally:
        engine.dispose()


def ping(engine: Engine) -> None:
    """Run ``SELECT 1`` on the job table's database.

    Raises:
        StorageError: the database is unreachable or failed.
    """
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
    except SQLAlchemyError as e:
        raise StorageError(f"job table at {engine.url!r} does not answer: {e}") from e
