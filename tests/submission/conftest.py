"""Fixtures of the submission service tests: a prepared stack on SQLite and on the real
PostgreSQL, a local image, and jobs put straight into a status with objects stored."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from core.settings import Settings
from core.states import JobStatus
from storage.blobs import output_key, row_key
from storage.jobtable.tables import Job
from submission import SubmissionService, prepare


@pytest.fixture
def service(tmp_path, db_url) -> SubmissionService:
    """On SQLite and on the real PostgreSQL (``db_url``), webhooks allowed to 127.0.0.1."""
    settings = Settings(home=tmp_path / "home", database_url=db_url,
                        allow_private_webhooks=True, webhook_secret="s" * 32)
    prepare(settings)
    return SubmissionService(settings)


@pytest.fixture
def image(tmp_path):
    """The user's own image file (any bytes: nothing here reads it)."""
    path = tmp_path / "pellet.png"
    path.write_bytes(b"the user's own file")
    return path


@pytest.fixture
def make_job(service, image):
    """``make_job(status, *, batch_id=None, rows=2, source=image, **spec)``: a job of
    ``source`` (or of ``upload_id=`` in ``spec``) in ``status`` with ``rows`` row records,
    their checkpoints (500 bytes each) and a ``labels.tif`` (1000 bytes) stored under its
    prefix."""

    def make(status: JobStatus, *, batch_id=None, rows=2, source=None, **spec):
        source = None if "upload_id" in spec else str(source or image)
        job = service.table.jobs.create(service.build_spec(source, **spec), batch_id=batch_id)
        service.table.rows.insert(job.id, [(i * 10, (i + 1) * 10) for i in range(rows)])
        for i in range(rows):
            service.blobs.put_bytes(row_key(job.id, i), b"strip" * 100)
        service.blobs.put_bytes(output_key(job.id, "labels.tif"), b"L" * 1000)
        with service.table.engine.begin() as conn:  # straight to the status under test
            conn.execute(update(Job).where(Job.id == job.id).values(status=status.value))
        return job

    return make
