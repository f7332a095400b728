"""SQLAlchemy models of the job table: jobs, rows (one per task strip of tile rows), models
and the HTTP API's keys.

Schema changes go through Alembic migrations in ``storage/jobtable/migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Timestamp columns of a job row (SQLite returns them naive; they are all UTC).
JOB_TIMESTAMPS = ("created_at", "updated_at", "started_at", "finished_at", "webhook_event_at",
                  "webhook_next_at", "webhook_delivered_at")


def utcnow() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the job table."""


class Job(Base):
    """One pellet image to segment."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict] = mapped_column(JSON)
    source_url: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    model_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    model_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    outputs: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Several jobs submitted together by POST /v1/batches share a batch id.
    batch_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    # Webhook outbox (storage/jobtable/webhook_outbox.py): armed in the UPDATE that ends the job, delivered
    # by the ``pelletseg.notify`` task, retried with backoff, swept by the reconciler.
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    webhook_event: Mapped[str | None] = mapped_column(String(16), nullable=True)
    webhook_event_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    webhook_next_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    webhook_last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_delivered_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # Lease of the job's streaming stitcher (worker/stages/streaming.py; migration 0005): who writes
    # the label map and overlay while the rows run, until when, if it stops renewing.
    stitch_worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    stitch_lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # The planner's or reducer's claim on the job (worker/stages/guard.py; migration 0006): who
    # runs the stage, since when, and how many attempts it has had (bounded by max_attempts).
    stage_worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    stage_started_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    stage_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Row(Base):
    """One row record: image rows ``[y0, y1)`` of a job, the unit of work and checkpoint."""

    __tablename__ = "rows"
    __table_args__ = (Index("ix_rows_job_status", "job_id", "status"),)

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    y0: Mapped[int] = mapped_column(Integer)
    y1: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    counts: Mapped[list | None] = mapped_column(JSON, nullable=True)
    #: How the labels were computed (migration 0007): ``{"runtime", "device", "precision",
    #: "f32_convs", "tta"}`` (``worker.engine.segmenter.Segmenter.inference``); None for rows
    #: done before it was recorded.
    inference: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)
    blob_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WorkerBeat(Base):
    """One worker process's heartbeat (``host:pid``; worker/liveness.py, migration 0006).

    The process is live while ``stopped_at`` is null and ``expires_at`` (the last beat plus
    three beat intervals) is in the future; rows and stages it holds are given back otherwise.
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ModelRecord(Base):
    """A registered model package, stored under ``models/{name}/{version}/``."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_models_name_version"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(50))
    sha256: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(100))
    encoder: Mapped[str] = mapped_column(String(100))
    classes: Mapped[list] = mapped_column(JSON)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key of the HTTP API. Only the key's sha256 is stored, never the key itself."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(8), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
