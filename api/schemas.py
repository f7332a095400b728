"""Request and response bodies of the HTTP API (pydantic models, shown in the OpenAPI page)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from storage.states import JobStatus

JOB_ID_EXAMPLE = "5b0f7a0e-8d7c-4a53-9d1c-2f4f8a1e6b42"


class ErrorOut(BaseModel):
    """Every error response: one human-readable sentence."""

    detail: str = Field(examples=[f"job {JOB_ID_EXAMPLE} does not exist"])


class JobCreate(BaseModel):
    """A new segmentation job. Options left null take the server's defaults."""

    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "source_url": "s3://pellets/2026-11/P-0042.tif",
                    "model": "ebc-unet-mnv2",
                    "labels": {"sample": "P-0042", "um_per_px": 0.42},
                    "webhook_url": "https://lims.example.com/hooks/pelletseg",
                    "idempotency_key": "lims-run-0042",
                }
            ]
        },
    )

    source_url: str = Field(
        min_length=1, max_length=4000,
        description="Image URL (s3://, gs://, file:// or a server path where allowed).",
    )
    model: str | None = Field(None, max_length=100, description="Model package name.")
    model_version: str | None = Field(
        None, max_length=50, description="Model version; null: newest registered."
    )
    tile_size: int | None = Field(None, ge=32, le=8192, description="Tile edge T (px).")
    halo: int | None = Field(None, ge=0, le=4096, description="Halo cropped per side (px).")
    labels: dict[str, Any] = Field(default_factory=dict, description="Free-form metadata.")
    webhook_url: str | None = Field(
        None, max_length=2000, description="http(s) URL to notify when the job ends."
    )
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200,
        description="Resubmitting with the same key returns the first job.",
    )


class ModelRef(BaseModel):
    """The exact model package a job runs with (version and sha256 known after planning)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str | None = Field(examples=["ebc-unet-mnv2"])
    version: str | None = Field(examples=["1"])
    sha256: str | None = Field(description="sha256 of the weights file.")


class JobOut(BaseModel):
    """A job and its progress."""

    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(examples=[JOB_ID_EXAMPLE])
    status: JobStatus = Field(examples=["running"])
    source_url: str = Field(examples=["s3://pellets/2026-11/P-0042.tif"])
    labels: dict[str, Any] = Field(examples=[{"sample": "P-0042"}])
    webhook_url: str | None = None
    model: ModelRef
    tile_size: int = Field(examples=[1024])
    halo: int = Field(examples=[128])
    width: int | None = Field(description="Image width (px), known after planning.",
                              examples=[20000])
    height: int | None = Field(description="Image height (px).", examples=[17000])
    rows_total: int | None = Field(description="Row records (null before planning).",
                                   examples=[23])
    rows_done: int = Field(examples=[12])
    rows_running: int = Field(examples=[2])
    rows_pending: int = Field(examples=[9])
    rows_failed: int = Field(examples=[0])
    throughput_mpx_s: float | None = Field(
        description="Megapixels segmented per second since the job started.", examples=[3.1]
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="Why the job failed, if it did.")
    outputs: list[str] = Field(
        description="Names of the outputs written so far.",
        examples=[["labels_tif", "overlay_tif", "fractions_json"]],
    )


class JobList(BaseModel):
    """One page of jobs, newest first."""

    jobs: list[JobOut]
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])
    next_offset: int | None = Field(
        description="Offset of the next page; null on the last page.", examples=[50]
    )


class ResultsOut(BaseModel):
    """Outputs of a succeeded job."""

    fractions: dict[str, Any] = Field(
        description="The fractions.json document: pixels and % per phase.",
        examples=[{"job_id": JOB_ID_EXAMPLE, "pixels_total": 340000000,
                   "classes": [{"index": 0, "name": "pore", "pixels": 1200, "percent": 0.1}]}],
    )
    files: dict[str, str] = Field(
        description="Output file name -> download URL (presigned on S3, else an API route).",
        examples=[{"labels.tif": f"http://127.0.0.1:8000/v1/jobs/{JOB_ID_EXAMPLE}/files/labels.tif"}],
    )


class ModelOut(BaseModel):
    """A registered model package."""

    name: str = Field(examples=["ebc-unet-mnv2"])
    version: str = Field(examples=["1"])
    sha256: str
    architecture: str = Field(examples=["Unet"])
    encoder: str = Field(examples=["mobilenet_v2"])
    classes: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    created_at: datetime


class HealthOut(BaseModel):
    """Liveness: the process answers."""

    status: str = Field(examples=["ok"])


class ReadyOut(BaseModel):
    """Readiness: each dependency's state (``ok`` or the error)."""

    status: str = Field(examples=["ready"])
    checks: dict[str, str] = Field(examples=[{"database": "ok", "broker": "ok"}])
    detail: str | None = Field(None, examples=["not ready: broker failed"])
