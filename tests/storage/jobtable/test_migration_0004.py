"""Migration 0004 (batches, webhook outbox): upgrade from 0003 copies webhook URLs out of the
stored specs, the schema then matches the models (SQLite and PostgreSQL), downgrade works."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from storage.jobtable.engine import alembic_config, make_engine, upgrade
from storage.jobtable.tables import Base


def test_upgrade_backfills_then_downgrades(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url, "0003")
    engine = make_engine(url)
    with engine.begin() as conn:
        for job_id, spec in [("a", '{"webhook_url": "https://hooks.example.com/x"}'),
                             ("b", "{}")]:
            conn.execute(text("INSERT INTO jobs (id, status, spec, source_url, created_at, "
                              "updated_at) VALUES (:id, 'failed', :spec, 's3://b/x.tif', "
                              "'2026-11-01', '2026-11-01')"), {"id": job_id, "spec": spec})
    upgrade(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, webhook_url, webhook_attempts, batch_id FROM jobs "
                                 "ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [("a", "https://hooks.example.com/x", 0, None),
                                            ("b", None, 0, None)]
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    command.downgrade(alembic_config(url), "0003")
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert not {c for c in columns if c.startswith("webhook_") or c == "batch_id"}
    engine.dispose()


@pytest.mark.postgres
def test_postgres_schema_matches_the_models(pg_url):
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
