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


@pytest.mark.parametrize("confined", [False, True])
def test_a_file_named_in_latin1_is_refused_with_what_to_do(tmp_path, confined):
    """A name whose bytes are not UTF-8 (a Windows share mounted without iocharset=utf8):
    libvips takes UTF-8 names only, and the job would have failed "does not exist". Refused at
    submission, naming the byte and the fix; with source roots as without."""
    import os

    folder = tmp_path / "share"
    folder.mkdir()
    path = os.fsdecode(os.fsencode(folder) + b"/Schliff_\xe4.jpg")
    with open(path, "wb") as f:
        f.write(b"an image")
    settings = Settings(home=tmp_path / "home", source_roots=[str(folder)] if confined else [])
    service = SubmissionService(settings)
    for source in (path, str(folder / "ok.jpg")):
        with pytest.raises(SubmissionError) as e:
            service.normalise_source(source, confine_files=confined)
        if source == path:
            assert str(e.value).startswith(f"{folder}/Schliff_\\xe4.jpg: its name is not UTF-8 "
                                           "(byte 0xe4)"), e.value
            assert "convmv -f latin1 -t utf-8" in str(e.value) and "iocharset=utf8" in str(e.value)
        else:
            assert "no such file" in str(e.value)


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
