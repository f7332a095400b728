"""API keys (storage/jobtable/api_keys.py), the 0002 migration, and job listing by labels and offset."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import inspect

from core.spec import JobSpec
from core.states import JobStatus
from storage.errors import NotFoundError
from storage.jobtable.api_keys import ApiKeys, hash_key
from storage.jobtable.engine import make_engine, upgrade


@pytest.fixture
def keys(table):
    return ApiKeys(table.engine)


def test_create_verify_revoke(keys):
    record, key = keys.create("  lims  ")
    assert key.startswith("psk_") and len(key) >= 46
    assert (record.name, record.prefix, record.revoked_at) == ("lims", key[:8], None)
    assert record.key_hash == hashlib.sha256(key.encode()).hexdigest() == hash_key(key)
    assert keys.verify(key).id == record.id
    assert keys.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert keys.verify("psk_short") is None and keys.verify("") is None
    revoked = keys.revoke(record.id)
    assert revoked.revoked_at is not None and revoked.revoked_at.tzinfo is not None
    assert keys.revoke(record.id).revoked_at == revoked.revoked_at  # idempotent
    assert keys.verify(key).revoked_at == revoked.revoked_at
    with pytest.raises(NotFoundError):
        keys.revoke(10**9)
    with pytest.raises(ValueError):
        keys.create(" ")


def test_keys_are_distinct(keys):
    made = [keys.create(f"k{i}") for i in range(3)]
    assert len({key for _, key in made}) == 3
    assert {r.id for r, _ in made} <= {r.id for r in keys.list()}


def test_migration_0002_adds_and_drops_the_key_table(tmp_path):
    from alembic import command

    from storage.jobtable.engine import alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"

    def tables() -> set[str]:
        engine = make_engine(url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    upgrade(url, "0001")
    assert "api_keys" not in tables()
    upgrade(url)
    assert "api_keys" in tables()
    command.downgrade(alembic_config(url), "0001")
    assert "api_keys" not in tables() and "jobs" in tables()


def test_list_jobs_filters_labels_and_offsets(table):
    made = [table.jobs.create(JobSpec(tile_size=1024, halo=128, source_url="file:///x.tif", model="m",
                                         labels={"lab": "n" if i % 2 else "s", "i": i}))
            for i in range(5)]
    newest_first = [j.id for j in reversed(made)]
    assert [j.id for j in table.jobs.list()] == newest_first
    assert [j.id for j in table.jobs.list(limit=2, offset=1)] == newest_first[1:3]
    north = [j.id for j in table.jobs.list(labels={"lab": "n"})]
    assert north == [made[3].id, made[1].id]
    assert [j.id for j in table.jobs.list(labels={"lab": "n"}, offset=1)] == [made[1].id]
    assert [j.id for j in table.jobs.list(labels={"i": "4"})] == [made[4].id]
    assert table.jobs.list(labels={"lab": "n"}, status=JobStatus.FAILED) == []
