"""Request and response bodies of the HTTP API (pydantic models, shown in the OpenAPI page)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from core.inference import PRECISION_NAMES, inference_lines, inference_text
from core.job_warnings import WarningCode
from core.spec import Precision
from core.states import JobStatus, RowStatus
from submission.reports import MAX_BATCH

#: What a job request's ``precision`` means (:attr:`core.spec.JobSpec.precision`).
PRECISION_DESCRIPTION = (
    "Inference precision asked of every worker that runs the job's rows (overrides their "
    "PELLETSEG_PRECISION): fp32 pins float32 (no CUDA autocast, no bfloat16 OpenVINO), "
    "bf16/fp16 pick the CUDA autocast dtype; null: each worker's setting. What each row used "
    "is in GET /v1/jobs/{id}/rows and fractions.json."
)
#: What a job request's ``significant_bits`` means (:attr:`core.spec.JobSpec.significant_bits`).
SIGNIFICANT_BITS_DESCRIPTION = (
    "How many of a 16-bit image's bits the camera fills (8-16), e.g. 12 for a 12-bit camera "
    "whose 16-bit TIFF does not say so: the model's 8-bit input is then the top 8 of them "
    "instead of the high byte (which would leave such an image at 1/16 of its brightness). "
    "null: what the file records (OME-XML SignificantBits, CZI ComponentBitCount, TIFF MaxSampleValue), else 16. "
    "Ignored for 8-bit and float images."
)
#: What a job request's ``scene`` means (:attr:`core.spec.JobSpec.scene`).
SCENE_DESCRIPTION = (
    "Of an OME-TIFF of several images (scenes, e.g. one per pellet of a mount): the image to "
    "read, 0-based as the file numbers them (Bio-Formats' series index). null: the file's one "
    "image; a file of several similar-size images then fails at planning, naming its scenes. "
    "Submit one job per scene (a batch) to segment them all."
)
JOB_ID_EXAMPLE = "5b0f7a0e-8d7c-4a53-9d1c-2f4f8a1e6b42"
UPLOAD_ID_EXAMPLE = "0d8c9a52-43be-4f0e-a3c4-6d16a3f0c1aa"
BATCH_ID_EXAMPLE = "b3e1c2a4-7f61-5a0e-9e7b-3c2d1f0a9b88"


class ErrorOut(BaseModel):
    """Every error response: one human-readable sentence."""

    detail: str = Field(examples=[f"job {JOB_ID_EXAMPLE} does not exist"])


class JobOptions(BaseModel):
    """The options of a job, shared by a job request and a batch's defaults (null: the
    server's default, or for a batch's jobs the batch's)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

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
    pixel_size_um: float | None = Field(
        None, gt=0, le=1e6, allow_inf_nan=False,
        description="Pixel size (µm/px); null: read from the image's metadata (OME-XML, "
        "TIFF resolution), else outputs are in px.",
    )
    precision: Precision | None = Field(None, description=PRECISION_DESCRIPTION)
    significant_bits: int | None = Field(
        None, ge=8, le=16, description=SIGNIFICANT_BITS_DESCRIPTION, examples=[12])
    scene: int | None = Field(None, ge=0, le=100_000, description=SCENE_DESCRIPTION,
                              examples=[None])


class JobCreate(JobOptions):
    """A new segmentation job: ``source_url`` or ``upload_id`` (exactly one). Options left
    null take the server's defaults."""

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

    source_url: str | None = Field(
        None, min_length=1, max_length=4000,
        description="Image URL (s3://, gs://, file:// or a server path where allowed).",
    )
    upload_id: str | None = Field(
        None, min_length=1, max_length=64, examples=[UPLOAD_ID_EXAMPLE],
        description="A completed upload (POST /v1/uploads) to segment instead of a URL.",
    )
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200,
        description="Resubmitting with the same key returns the first job.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> JobCreate:
        if (self.source_url is None) == (self.upload_id is None):
            raise ValueError("give exactly one of source_url and upload_id")
        return self


class ModelRef(BaseModel):
    """The exact model package a job runs with (version and sha256 known after planning)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str | None = Field(examples=["ebc-unet-mnv2"])
    version: str | None = Field(examples=["1"])
    sha256: str | None = Field(description="sha256 of the weights file.")


class WebhookOut(BaseModel):
    """Delivery state of a job's end-of-job webhook (null until the job has ended once)."""

    status: str | None = Field(
        description="pending, sending, delivered or failed (after the last attempt).",
        examples=["delivered"],
    )
    event: str | None = Field(description="The ending notified.", examples=["succeeded"])
    attempts: int = Field(examples=[1])
    last_error: str | None = Field(examples=[None])
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class JobWarningOut(BaseModel):
    """Something a laboratory must read beside a job's results (:mod:`core.job_warnings`)."""

    # text, not the enum: workers are upgraded before the API, so a newer worker's code must
    # not make an older API fail to show the job
    code: str = Field(description="What it is about, for programs: "
                      f"{', '.join(c.value for c in WarningCode)} (others may come).",
                      examples=["pixel_size_unlike_model"])
    message: str = Field(examples=[
        "pixel size 1.000 µm/px is 2.0 x coarser than model lumen 3 was trained at (0.500 "
        "µm/px): grains and pores are 2.0 x smaller in px than it learned them, and its labels "
        "may be wrong. ..."])


class JobOut(BaseModel):
    """A job and its progress."""

    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(examples=[JOB_ID_EXAMPLE])
    status: JobStatus = Field(examples=["running"])
    source_url: str = Field(examples=["s3://pellets/2026-11/P-0042.tif"])
    labels: dict[str, Any] = Field(examples=[{"sample": "P-0042"}])
    webhook_url: str | None = None
    webhook: WebhookOut | None = Field(None, description="Webhook delivery, once the job ended.")
    batch_id: str | None = Field(None, examples=[BATCH_ID_EXAMPLE])
    model: ModelRef
    tile_size: int = Field(examples=[1024])
    halo: int = Field(examples=[128])
    pixel_size_um: float | None = Field(
        None, description="Pixel size (µm/px): given with the job, or read from the source "
        "at planning; null: unknown (outputs in px).", examples=[0.42])
    pixel_size_from: str | None = Field(
        None, description="Where the pixel size came from: 'the job' (given with it), or the "
        "source's record that gave it (OME-XML, an ImageJ calibration, resolution tags with "
        "their dpi or px/cm, a CZI's scaling, a slide's microns per pixel); null: no pixel "
        "size, or a job planned before 2026-12-08.",
        examples=["the file's resolution tags, 20000 px/cm"])
    precision: Precision | None = Field(
        None, description="Inference precision the job asked for; null: each worker's "
        "setting.", examples=[None])
    significant_bits: int | None = Field(
        None, description="Significant bits the 16-bit source was converted with: given with "
        "the job, or what the file records, else 16 (15 for signed samples: all their range; "
        "known after planning); null: not a 16-bit source, or not planned yet.", examples=[12])
    scene: int | None = Field(
        None, description="The image of a multi-image OME-TIFF the job reads (given with "
        "it); null: the file's one image.", examples=[None])
    scenes: list[int] | None = Field(
        None, description="Of a job refused for reading an OME-TIFF of several images "
        "without a scene: the scenes it may be given (a job each: POST /v1/batches with "
        "'scene', or POST /v1/jobs/{id}/rerun with one); null otherwise.", examples=[None])
    significant_bits_suggested: int | None = Field(
        None, description="Of a job refused for a 16-bit image (unsigned or signed) that "
        "nothing describes and whose samples fit in 12 bits, so it reads nearly black: the "
        "camera depth (10, 12, 14 bits) that holds "
        "its samples, to rerun it with (POST /v1/jobs/{id}/rerun 'significant_bits'); null "
        "otherwise.", examples=[None])
    warnings: list[JobWarningOut] = Field(
        default_factory=list, description="What may make the results wrong without failing "
        "the job, found at planning (the demo model on a pellet image; a pixel size unlike "
        "the model's training pixel size; pixels recorded as not square; a stack of which "
        "only the first image was read); also in fractions.json.")

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

    @computed_field(description="The asked precision in words (float32, bfloat16, float16); "
                    "null where the job asks for none.", examples=["bfloat16"])
    @property
    def precision_name(self) -> str | None:
        return None if self.precision is None else PRECISION_NAMES[self.precision]


class JobList(BaseModel):
    """One page of jobs, newest first."""

    jobs: list[JobOut]
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])
    next_offset: int | None = Field(
        description="Offset of the next page; null on the last page.", examples=[50]
    )
    workers_live: int = Field(
        description="Worker processes with a live heartbeat in the job table now: with 0, "
        "queued and running jobs wait until one starts (`pelletseg worker`; a deployment's "
        "autoscaler starts them when work arrives).", examples=[2])


class ResultsOut(BaseModel):
    """Outputs of a succeeded job."""

    fractions: dict[str, Any] = Field(
        description="The fractions.json document: pixels and % per phase, and how the rows "
        "were computed (`inference`: runtime, device, precision, rows).",
        examples=[{"job_id": JOB_ID_EXAMPLE, "pixels_total": 340000000,
                   "classes": [{"index": 0, "name": "pore", "pixels": 1200, "percent": 0.1}]}],
    )
    files: dict[str, str] = Field(
        description="Output file name -> download URL (presigned on S3, else an API route).",
        examples=[{"labels.tif": f"http://127.0.0.1:8000/v1/jobs/{JOB_ID_EXAMPLE}/files/labels.tif"}],
    )
    confidence: dict[str, Any] | None = Field(
        None,
        description="The confidence.json document: per class, the share of pixels whose "
                    "confidence (max softmax probability) is below 0.5, and its mean; None for "
                    "jobs without a confidence layer.",
        examples=[{"job_id": JOB_ID_EXAMPLE, "low_below": 0.5, "low_confidence_percent": 3.2,
                   "classes": [{"index": 0, "name": "pore", "pixels": 1200,
                                "low_confidence_pixels": 40, "low_confidence_percent": 3.333,
                                "mean_confidence": 0.91}]}],
    )

    @computed_field(description="How the rows were computed, in words: one line per way "
                    "(``fractions.inference``), the rows named where there are several; empty "
                    "for jobs from before it was recorded.",
                    examples=[["computed with openvino on cpu, float32"]])
    @property
    def inference_notes(self) -> list[str]:
        return inference_lines(self.fractions.get("inference"))


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


class RowOut(BaseModel):
    """One row record of a job: image rows ``[y0, y1)``, the unit of work and checkpoint."""

    index: int = Field(examples=[4])
    status: RowStatus = Field(examples=["done"])
    y0: int = Field(description="First image row (px).", examples=[3072])
    y1: int = Field(description="Image row after the last one (px).", examples=[3840])
    attempts: int = Field(description="Claims so far (1 on a first run).", examples=[1])
    seconds: float | None = Field(description="Time the done attempt took (s).",
                                  examples=[4.2])
    error: str | None = Field(description="Why the last attempt failed, if it did.")
    worker: str | None = Field(description="Worker that claimed it last.",
                               examples=["pelletseg0-1234@gpu-7"])
    inference: dict[str, Any] | None = Field(
        None, description="How the done row's labels were computed (runtime, device, "
        "precision, f32_convs: leading convolutions kept float32 in bfloat16, tta); null "
        "before it is done or for rows done before this was recorded.",
        examples=[{"runtime": "openvino", "device": "cpu", "precision": "bf16", "f32_convs": 9,
                   "tta": "none"}])
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field(description="``inference`` in words, as the job's inference notes say it; "
                    "null where ``inference`` is.",
                    examples=["openvino on cpu, bfloat16 (first 9 convolutions float32)"])
    @property
    def inference_text(self) -> str | None:
        return None if self.inference is None else inference_text(self.inference)


class RowList(BaseModel):
    """Every row record of a job, in index order (empty before planning)."""

    job_id: str = Field(examples=[JOB_ID_EXAMPLE])
    rows: list[RowOut]


class BatchCreate(JobOptions):
    """Several jobs at once, one per image, sharing one batch id. Its options
    (:class:`JobOptions`) apply to the jobs that leave them null; its ``labels`` are merged
    under each job's own labels."""

    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={"examples": [{
            "jobs": [{"source_url": "s3://pellets/P-1.tif", "labels": {"sample": "P-1"}},
                     {"upload_id": UPLOAD_ID_EXAMPLE, "labels": {"sample": "P-2"}}],
            "labels": {"campaign": "2026-11"},
            "idempotency_key": "lims-batch-17",
        }]},
    )

    jobs: list[JobCreate] = Field(min_length=1, max_length=MAX_BATCH)
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=180,
        description="Resubmitting with the same key returns the same batch and jobs (job i "
        "gets key '<key>#<i>' unless it has its own).",
    )


class BatchOut(BaseModel):
    """A batch: its jobs (newest first) and how many are in each status."""

    id: str = Field(examples=[BATCH_ID_EXAMPLE])
    jobs_total: int = Field(examples=[2])
    status_counts: dict[str, int] = Field(examples=[{"running": 1, "queued": 1}])
    jobs: list[JobOut]


class BatchResumed(BatchOut):
    """A batch after ``POST /v1/batches/{id}/resume``, and which of its jobs were resumed."""

    resumed: list[str] = Field(description="Ids of the jobs resumed, in submission order.",
                               examples=[[JOB_ID_EXAMPLE]])


class BatchCancelled(BatchOut):
    """A batch after ``POST /v1/batches/{id}/cancel``, and which of its jobs were cancelled."""

    cancelled: list[str] = Field(description="Ids of the jobs cancelled, in submission order.",
                                 examples=[[JOB_ID_EXAMPLE]])


class RerunRequest(BaseModel):
    """Which model a rerun takes (null: the earlier job's model, at its newest version), and
    what it corrects of the earlier job's options (null: kept)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, max_length=100, description="Model package name.")
    model_version: str | None = Field(None, max_length=50,
                                      description="Its version (null: the newest).")
    pixel_size_um: float | None = Field(
        None, gt=0, le=1e6, allow_inf_nan=False,
        description="Pixel size (µm/px) replacing the earlier job's; null: kept.")
    significant_bits: int | None = Field(
        None, ge=8, le=16, description="Significant bits replacing the earlier job's (e.g. "
        "after a 12-bit camera's job was refused); null: kept. " + SIGNIFICANT_BITS_DESCRIPTION)
    scene: int | None = Field(
        None, ge=0, le=100_000, description="Scene replacing the earlier job's (e.g. after a "
        "multi-image OME-TIFF was refused without one); null: kept; not for a batch rerun "
        "(422). " + SCENE_DESCRIPTION)


class JobDeleted(JobOut):
    """A job after ``DELETE /v1/jobs/{id}`` (status ``deleted``) and what was removed."""

    objects_removed: int = Field(ge=0, description="Objects removed from the store by this call "
                                 "(outputs, row checkpoints, the converted source).")
    bytes_removed: int = Field(ge=0, description="Their size (bytes).")


class BatchDeleted(BatchOut):
    """A batch after ``DELETE /v1/batches/{id}``, which of its jobs were deleted and what was
    removed."""

    deleted: list[str] = Field(description="Ids of the jobs deleted, in submission order.",
                               examples=[[JOB_ID_EXAMPLE]])
    objects_removed: int = Field(ge=0, description="Objects removed from the store.")
    bytes_removed: int = Field(ge=0, description="Their size (bytes).")


class UploadCreate(BaseModel):
    """A file to upload: its name and exact size."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"filename": "P-0042.tif", "size": 6442450944}]},
    )

    filename: str = Field(min_length=1, max_length=1000)
    size: int = Field(ge=1, description="File size (bytes).")
    part_size: int | None = Field(
        None, ge=5 * 1024 * 1024, le=5 * 1024**3,
        description="Part size (bytes, >= 5 MiB); default PELLETSEG_UPLOAD_PART_BYTES.",
    )


class PartOut(BaseModel):
    """A part that arrived."""

    number: int = Field(examples=[1])
    size: int = Field(examples=[67108864])
    etag: str = Field(description="Hex MD5 of the part ('' once the upload is complete).")


class UploadOut(BaseModel):
    """An upload's state. ``urls`` (create and /urls only) maps part numbers to PUT URLs."""

    id: str = Field(examples=[UPLOAD_ID_EXAMPLE])
    filename: str = Field(examples=["P-0042.tif"])
    key: str = Field(examples=[f"uploads/{UPLOAD_ID_EXAMPLE}/P-0042.tif"])
    size: int
    part_size: int
    parts: int = Field(description="Number of parts (1..10,000).")
    storage: str = Field(
        description="s3: PUT parts to the presigned URLs, without an Authorization header; "
        "local: PUT them to the API with the API key.", examples=["s3"],
    )
    parts_uploaded: list[PartOut]
    bytes_uploaded: int
    complete: bool
    created_at: datetime
    completed_at: datetime | None
    source_url: str | None = Field(description="Where jobs read the file, once complete.")
    scenes: list[int] = Field(
        default_factory=list, examples=[[1, 2]],
        description="Of a complete upload that is an OME-TIFF of several images of similar "
        "size (one per pellet of a mount): its scenes (0-based OME Image indices), a job each "
        "(POST /v1/batches with `scene` per job; a job without one is refused at planning), "
        "read from the OME-XML of its first page alone. Empty for a file of one image "
        "or of another format.")
    urls: dict[int, str] = Field(default_factory=dict)
    urls_expire_at: datetime | None = None


class UploadUrlsRequest(BaseModel):
    """Part numbers that need (fresh) upload URLs."""

    model_config = ConfigDict(extra="forbid")

    parts: list[int] = Field(min_length=1, max_length=1000, examples=[[1, 2, 3]])
