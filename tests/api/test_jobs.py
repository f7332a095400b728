"""Job submission (api/jobs.py): source checks, spec defaults, idempotency, the plan message."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from api.jobs import SubmissionError, build_spec, normalise_source, submit_job
from storage.db import cached_engine, upgrade
from storage.jobs import JobStore
from storage.queues import make_celery
from storage.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(home=tmp_path / "home")
    s.ensure_home()
    upgrade(s.resolved_database_url)
    return s


def _broker_messages(settings: Settings) -> list[str]:
    """Payloads waiting in the embedded broker (kombu's SQLAlchemy transport tables)."""
    engine = create_engine(settings.resolved_broker_url.removeprefix("sqla+"))
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT payload FROM kombu_message"))]


def test_local_paths_become_file_urls_and_schemes_are_checked(settings, tmp_path):
    img = tmp_path / "a b.png"
    img.write_bytes(b"x")
    assert normalise_source(str(img), settings) == img.resolve().as_uri()
    assert normalise_source("s3://bucket/p.tif", settings) == "s3://bucket/p.tif"
    with pytest.raises(SubmissionError, match="scheme 'http' is not allowed"):
        normalise_source("http://169.254.169.254/latest/meta-data", settings)
    with pytest.raises(SubmissionError, match="no such file"):
        normalise_source(str(tmp_path / "missing.tif"), settings)


@pytest.mark.parametrize("path", ["~0", "~no-such-user-pelletseg/x.tif", "a\x00b.tif"])
def test_unusable_local_paths_are_refused_with_the_reason(settings, path):
    # Found by schemathesis: "~0" made expanduser raise RuntimeError (a 500 in the API).
    with pytest.raises(SubmissionError, match="not a usable file path"):
        normalise_source(path, settings)


def test_spec_takes_defaults_from_settings_and_rejects_bad_geometry(settings, tmp_path):
    img = tmp_path / "p.png"
    img.write_bytes(b"x")
    spec = build_spec(settings, str(img))
    assert (spec.model, spec.tile_size, spec.halo) == (settings.default_model, 1024, 128)
    assert spec.stride == 768
    with pytest.raises(SubmissionError, match="multiple of 32"):
        build_spec(settings, str(img), tile_size=500)
    with pytest.raises(SubmissionError, match="tile_size - 2\\*halo"):
        build_spec(settings, str(img), tile_size=256, halo=120)


def test_submit_enqueues_one_plan_message_per_job_and_honours_idempotency(settings, tmp_path):
    img = tmp_path / "p.png"
    img.write_bytes(b"x")
    app = make_celery(settings)
    spec = build_spec(settings, str(img))
    first = submit_job(settings, spec, idempotency_key="lab-42", app=app)
    again = submit_job(settings, spec, idempotency_key="lab-42", app=app)
    other = submit_job(settings, spec, app=app)
    assert first.id == again.id != other.id
    payloads = _broker_messages(settings)
    assert len(payloads) == 2
    assert any(first.id in p for p in payloads) and any(other.id in p for p in payloads)
    jobs = JobStore(cached_engine(settings.resolved_database_url))
    assert {j.id for j in jobs.list_jobs()} == {first.id, other.id}
    assert all(j.status == "queued" for j in jobs.list_jobs())
