"""Migration 0007 (``rows.inference``): rows done before it keep their counts and read None,
the schema then matches the models, downgrade drops the column and keeps the rows."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from storage.jobtable.engine import alembic_config, make_engine, upgrade
from storage.jobtable.tables import Base


def test_upgrade_keeps_done_rows_then_downgrades(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url, "0006")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO jobs (id, status, spec, source_url, created_at, "
                          "updated_at, webhook_attempts) VALUES ('a', 'succeeded', '{}', "
                          "'s3://b/x.tif', '2026-11-01', '2026-11-01', 0)"))
        conn.execute(text("INSERT INTO rows (job_id, \"index\", status, y0, y1, attempts, "
                          "counts) VALUES ('a', 0, 'done', 0, 96, 1, '[10, 20]')"))
    upgrade(url)
    with engine.begin() as conn:
        assert tuple(conn.execute(text("SELECT counts, inference FROM rows")).one()) == (
            "[10, 20]", None)
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        conn.execute(text("UPDATE rows SET inference = '{\"precision\": \"bf16\"}'"))
    command.downgrade(alembic_config(url), "0006")
    assert "inference" not in {c["name"] for c in inspect(engine).get_columns("rows")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT counts FROM rows")).scalar_one() == "[10, 20]"
    engine.dispose()
