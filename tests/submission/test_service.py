"""Job submission (submission/service.py): source checks, spec defaults, idempotency, the plan message."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from core.settings import Settings
from queues import make_celery
from storage.jobtable import job_table
from submission import SubmissionError, SubmissionService, prepare


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(home=tmp_path / "home")
    prepare(s)  # migrated, bundled models published
    return s


def _broker_messages(settings: Settings) -> list[str]:
    """Payloads waiting in the embedded broker (kombu's SQLAlchemy transport tables)."""
    engine = create_engine(settings.resolved_broker_url.removeprefix("sqla+"))
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT payload FROM kombu_message"))]


def test_local_paths_become_file_urls_and_schemes_are_checked(settings, tmp_path):
    img = tmp_path / "a b.png"
    img.write_bytes(b"x")
    assert SubmissionService(settings).normalise_source(str(img)) == img.resolve().as_uri()
    assert SubmissionService(settings).normalise_source("s3://bucket/p.tif") == "s3://bucket/p.tif"
    with pytest.raises(SubmissionError, match="scheme 'http' is not allowed"):
        SubmissionService(settings).normalise_source("http://169.254.169.254/latest/meta-data")
    with pytest.raises(SubmissionError, match="no such file"):
        SubmissionService(settings).normalise_source(str(tmp_path / "missing.tif"))
    with pytest.raises(SubmissionError, match=f"^{tmp_path}: a folder, not an image file$"):
        SubmissionService(settings).normalise_source(str(tmp_path))


@pytest.mark.parametrize("path", ["~0", "~no-such-user-pelletseg/x.tif", "a\x00b.tif"])
def test_unusable_local_paths_are_refused_with_the_reason(settings, path):
    # Found by schemathesis: "~0" made expanduser raise RuntimeError (a 500 in the API).
    with pytest.raises(SubmissionError, match="not a usable file path"):
        SubmissionService(settings).normalise_source(path)


def test_spec_takes_defaults_from_settings_and_rejects_bad_geometry(settings, tmp_path):
    img = tmp_path / "p.png"
    img.write_bytes(b"x")
    spec = SubmissionService(settings).build_spec(str(img))
    # the bundled model package's geometry, chosen by measurement (docs/performance.md)
    assert (spec.model, spec.tile_size, spec.halo) == (settings.default_model, 1728, 96)
    assert spec.stride == 1536
    with pytest.raises(SubmissionError, match="multiple of 32"):
        SubmissionService(settings).build_spec(str(img), tile_size=500)
    with pytest.raises(SubmissionError, match="tile_size - 2\\*halo"):
        SubmissionService(settings).build_spec(str(img), tile_size=256, halo=120)


def test_submit_enqueues_one_plan_message_per_job_and_honours_idempotency(settings, tmp_path):
    img = tmp_path / "p.png"
    img.write_bytes(b"x")
    app = make_celery(settings)
    spec = SubmissionService(settings).build_spec(str(img))
    first = SubmissionService(settings, app=app).submit(spec, idempotency_key="lab-42")
    again = SubmissionService(settings, app=app).submit(spec, idempotency_key="lab-42")
    other = SubmissionService(settings, app=app).submit(spec)
    assert first.id == again.id != other.id
    payloads = _broker_messages(settings)
    assert len(payloads) == 2
    assert any(first.id in p for p in payloads) and any(other.id in p for p in payloads)
    table = job_table(settings)
    assert {j.id for j in table.jobs.list()} == {first.id, other.id}
    assert all(j.status == "queued" for j in table.jobs.list())
