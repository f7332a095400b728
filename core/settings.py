"""Per-machine settings: one ``Settings`` object read from ``PELLETSEG_*`` environment variables.

Per-job options (model, tile geometry, labels) live in the versioned :class:`core.spec.JobSpec`
stored on the job row; this object only says where things are and how this machine works.

Embedded defaults put everything under ``home`` (``PELLETSEG_HOME``, default ``~/.pelletseg``):

==================  ===============================================
job table           ``sqlite:///{home}/pelletseg.db``
broker              ``sqla+sqlite:///{home}/broker.db`` (kombu SQLAlchemy transport)
blob store          ``file://{home}/store``
worker scratch      ``{home}/cache``
==================  ===============================================
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.geometry import GeometryError, TileGeometry
from core.spec import Precision

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Machine settings. Every field reads the environment variable ``PELLETSEG_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="PELLETSEG_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".pelletseg",
        description="Folder holding the embedded stack's state (database, broker, store, cache).",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the job table; default SQLite under home."
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker URL (redis://, amqp://, sqs://); default kombu's SQLAlchemy "
        "transport on a SQLite file under home.",
    )
    broker_transport_options: dict = Field(
        default_factory=dict,
        description="Extra kombu transport options as JSON (e.g. SQS region, predefined_queues).",
    )
    storage_url: str | None = Field(
        None, description="fsspec root URL for blobs (file://, s3://, gs://, memory://)."
    )
    cache_dir: Path | None = Field(
        None, description="Local scratch folder for localised sources and models; default home/cache."
    )
    export_cache_dir: Path | None = Field(
        None,
        description="Folder of exported model graphs (ONNX, keyed by the package's weights "
        "sha256 and the export recipe, checksummed, rebuilt when missing); default "
        "cache_dir/exported. Share one folder between the homes or workers of a machine and "
        "each model is exported once.",
    )
    # Defaults for new jobs (each job stores its own copy in its JobSpec).
    default_model: str = Field("ebc-unet-mnv2", description="Model name used when a job names none.")
    tile_size: int | None = Field(
        None,
        description="Tile edge T (px) for jobs that name none, instead of their model package's "
        "(unset: the package's geometry, the one it was trained and evaluated at); set "
        "together with halo.",
    )
    halo: int | None = Field(
        None,
        description="Halo (px) for jobs that name none, instead of their model package's; set "
        "together with tile_size.",
    )
    rows_per_task: int = Field(1, description="Tile rows per segment_row task.", ge=1)
    # Worker behaviour.
    batch_size: int = Field(
        0,
        description="Tiles per forward pass; 0 = auto (1 on CPU; on CUDA the most tiles that "
        "fit in half the free device memory, at most 64).",
        ge=0,
    )
    device: str = Field("auto", description="Torch device: auto, cpu, cuda, cuda:N.")
    torch_threads: int = Field(0, description="torch intra-op threads per worker; 0 = torch default.")
    channels_last: bool = Field(True, description="Run the model in channels_last memory format.")
    precision: Precision = Field(
        "bf16",
        description="Autocast dtype of inference on CUDA (bf16 falls back to fp16 on GPUs "
        "without bfloat16). On CPU, fp32 keeps the OpenVINO runtime in float32 for every "
        "package; otherwise it computes in bfloat16 for packages validated for it (model.json "
        "cpu_precision bf16, its cpu_f32_convs leading convolutions in float32) on CPUs with "
        "bfloat16 units (AMX, AVX-512 BF16), in float32 "
        "elsewhere. A job whose spec names a precision uses that one instead.",
    )
    fold_batchnorm: bool = Field(
        True,
        description="Fold batch norms into the convolutions before them for inference (same "
        "labels up to float rounding; ~1.3x faster on CPU).",
    )
    torch_compile: bool = Field(
        False,
        description="Run the model through torch.compile (first batch slower; falls back to "
        "eager with a warning if compilation fails); the same as runtime=compile.",
    )
    runtime: Literal["auto", "eager", "compile", "openvino", "onnxruntime", "tensorrt"] = Field(
        "auto",
        description="How a worker runs the model (worker.engine.runtimes): eager (PyTorch, the "
        "reference), compile (torch.compile), openvino (CPU), onnxruntime, tensorrt (CUDA, "
        "onnxruntime-gpu with TensorRT; unmeasured), or auto: openvino on CPU where installed "
        "(>= 99.9 % of eager fp32's labels on the real data, docs/performance.md), else eager. "
        "Exported graphs are cached per model sha256 under cache_dir/exported.",
    )
    prefetch_bands: int = Field(
        2,
        description="Tile-row input bands a row task reads ahead in a background thread while "
        "the device works (0: no reader thread).",
        ge=0,
    )
    rows_in_flight: int = Field(
        1,
        description="Row tasks one local worker process runs at once (Celery threads pool "
        "above 1), sharing one model, so that one row's reads and checkpoint writes overlap "
        "another row's inference; 2-3 on a GPU, 1 on CPU.",
        ge=1,
    )
    lease_seconds: int = Field(
        30,
        description="How long a claimed row stays leased before another worker may take it (s); "
        "renewed while its worker lives (row renewals and heartbeats), and never taken from a "
        "worker whose heartbeat is live, however long the row runs.",
        ge=1,
    )
    heartbeat_seconds: float = Field(
        5.0,
        description="Interval of each worker process's heartbeat in the job table (s); a worker "
        "that misses three beats is dead and its rows and stages are given back.",
        gt=0,
    )
    consumer_stall_seconds: float = Field(
        120.0,
        description="A `celery worker` process that stays idle this long while messages wait "
        "in its queues has a stalled consumer (kombu can stop consuming after a broker restart "
        "that broke an ack) and exits, so its supervisor (Kubernetes, compose, `pelletseg run`) "
        "starts a fresh one; 0 = never (s).",
        ge=0,
    )
    reconcile_seconds: float = Field(
        10.0,
        description="Interval of the reconcile pass every worker runs in the background (dead "
        "workers' rows, expired leases, lost messages, stale stages); 0 = only beat/pelletseg "
        "run reconcile (s).",
        ge=0,
    )
    retention_days: float | None = Field(
        None,
        description="Delete jobs that ended (succeeded, failed or cancelled) longer ago than "
        "this (days): their outputs and row checkpoints leave the store, the job stays as a "
        "'deleted' record (as `pelletseg delete`); done by the reconcile pass, at most 20 jobs "
        "per pass. On a local store, uploads older than this that no kept job reads go too "
        "(hourly; on S3 the bucket's lifecycle rule expires uploads). Unset: keep every job "
        "and upload until deleted by hand.",
        gt=0,
    )
    max_attempts: int = Field(3, description="Attempts per row before the row and its job fail.")
    pending_timeout_seconds: int = Field(
        1800,
        description="A row still pending this long after it was enqueued is enqueued again "
        "(its message was lost, e.g. with a worker killed between delivery and claim) (s).",
    )
    lost_message_seconds: float = Field(
        60.0,
        description="A row still pending, or a planner or reducer not yet started, this long "
        "after it was enqueued while its queue holds no waiting message is enqueued again at "
        "once rather than after the pending or reduce timeout: its message was lost or is "
        "hidden, e.g. received by a worker that stopped with a long poll in flight (SQS) or "
        "was killed before claiming it; 0 = only the timeouts (s).",
        ge=0,
    )
    # Fault tolerance (docs/reliability.md).
    queue_prefix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]{0,40}$",
        description="Prefix of every queue name (plan, rows, reduce and their dead-letter "
        "queues) and of pelletseg's other broker keys, so several deployments or test runs "
        "share one broker; letters, digits, '-' and '_' (SQS names allow no more).",
    )
    stream_reduce: bool = Field(
        False,
        description="Stitch the label map and overlay while the rows run: planning enqueues a "
        "pelletseg.stitch task on the reduce queue that feeds each row strip to the writers as "
        "soon as the row is done, and the reducer only adds the fractions. It holds a reduce "
        "worker for the whole job, so give the reduce queue a worker (threads pool) of its own; "
        "off by default (the embedded stack's workers also run the rows).",
    )
    stitch_lease_seconds: float = Field(
        60.0,
        description="Lease of a streaming stitcher, renewed every third of it; a reducer waits "
        "for a stitcher's outputs only while its lease is live (s).",
        gt=0,
    )
    stitch_poll_seconds: float = Field(
        0.2,
        description="How often a streaming stitcher looks in the job table for the next done "
        "row (s).",
        gt=0,
    )
    reduce_timeout_seconds: int = Field(
        3600,
        description="A job still reducing this long after its last change gets its reducer "
        "enqueued again (its message was lost); must exceed the longest reduce (s).",
        ge=1,
    )
    soft_shutdown_seconds: float = Field(
        60.0,
        description="Celery worker_soft_shutdown_timeout: on a cold shutdown (SIGQUIT, or "
        "SIGTERM with REMAP_SIGTERM=SIGQUIT) a running task gets this long to finish before "
        "its message is requeued; keep it below the 120 s spot notice and the supervisor's "
        "stop timeout (s).",
        ge=0,
    )
    db_retry_seconds: float = Field(
        120.0,
        description="How long a job-table call retries a lost or refused database connection "
        "(exponential backoff with jitter) before it fails (s).",
        ge=0,
    )
    embedded_poll_seconds: float = Field(
        0.1,
        description="How often an idle worker polls the embedded SQLite broker for a message "
        "(kombu's own default is 1 s, which delays every job's start by up to a second) (s).",
        gt=0,
        le=10,
    )
    broker_retry_seconds: float = Field(
        60.0,
        description="How long sending a task retries an unreachable broker (Celery's publish "
        "retry policy) before it fails (s).",
        ge=0,
    )
    spot_mode: Literal["off", "finish", "release"] = Field(
        "off",
        description="Spot interruption watcher of a worker: off; finish (on notice stop taking "
        "tasks, let the running row finish); release (stop taking tasks and hand the running "
        "row back to pending at once, without costing it an attempt).",
    )
    spot_metadata_url: str = Field(
        "http://169.254.169.254",
        description="Base URL of the instance metadata service (IMDSv2) the spot watcher polls.",
    )
    spot_poll_seconds: float = Field(
        5.0, description="Interval of the spot watcher's metadata polls (s).", gt=0
    )
    max_pixels: int = Field(
        4_000_000_000, description="Largest accepted image (pixels); guards against decompression bombs."
    )
    allowed_source_schemes: list[str] = Field(
        default_factory=lambda: ["file", "s3", "gs", "memory"],
        description="URL schemes a job's source may use.",
    )
    source_roots: list[str] = Field(
        default_factory=list,
        description="Folders that file sources submitted through the HTTP API must resolve into "
        "(after symlinks), as JSON; the uploads folder of a local store is always allowed. "
        "Empty: the API accepts file sources only from that uploads folder, and pelletseg serve "
        "on a non-loopback address refuses to start while 'file' is an allowed scheme "
        "(pelletseg run on the user's machine reads any path).",
    )
    # HTTP API (``pelletseg serve``).
    api_auth: bool = Field(
        True,
        description="Require 'Authorization: Bearer KEY' on /v1 routes; may be false only when "
        "the API binds a loopback address.",
    )
    api_host: str = Field("127.0.0.1", description="Address the HTTP API binds.")
    api_port: int = Field(8000, description="TCP port the HTTP API binds.", ge=1, le=65535)
    max_body_bytes: int = Field(
        1024 * 1024, description="Largest accepted request body on JSON routes (bytes).", ge=1
    )
    allow_private_webhooks: bool = Field(
        False,
        description="Accept webhook URLs that resolve to loopback/private/link-local addresses "
        "(tests and closed networks only).",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key signing webhook bodies (header X-Pelletseg-Signature); "
        "needed by the API (jobs with a webhook_url are refused without it) and the workers.",
    )
    webhook_max_attempts: int = Field(
        8, description="Delivery attempts of one webhook before it is recorded as failed.", ge=1
    )
    webhook_backoff_seconds: float = Field(
        10.0,
        description="Delay before the 2nd delivery attempt (s); doubles with each attempt, "
        "capped at one hour, plus up to 25 % jitter.",
        gt=0,
    )
    webhook_timeout_seconds: float = Field(
        10.0, description="Timeout of one webhook POST (connect and read, s).", gt=0
    )
    # Uploads through the API (``POST /v1/uploads``).
    upload_part_bytes: int = Field(
        64 * 1024 * 1024,
        description="Part size of multipart uploads (bytes); larger files get several parts. "
        "At least 5 MiB (S3's minimum); raised as needed to stay within 10,000 parts.",
        ge=5 * 1024 * 1024,
        le=5 * 1024**3,
    )
    max_upload_bytes: int = Field(
        200 * 1024**3, description="Largest accepted upload (bytes).", ge=1
    )
    upload_url_expires_seconds: int = Field(
        3600, description="Lifetime of presigned upload URLs (s).", ge=60, le=7 * 24 * 3600
    )

    @model_validator(mode="after")
    def _check_geometry(self) -> Settings:
        if (self.tile_size is None) != (self.halo is None):
            raise ValueError("PELLETSEG_TILE_SIZE and PELLETSEG_HALO go together: set both or "
                             "neither (neither: each model package's own geometry)")
        if self.tile_size is not None:
            try:
                TileGeometry(self.tile_size, self.halo)
            except GeometryError as e:
                raise ValueError(f"PELLETSEG_TILE_SIZE / PELLETSEG_HALO: {e}") from None
        return self

    @property
    def geometry(self) -> TileGeometry | None:
        """The operator's tile geometry override, or None (use each model package's)."""
        if self.tile_size is None or self.halo is None:
            return None
        return TileGeometry(self.tile_size, self.halo)

    @cached_property
    def resolved_database_url(self) -> str:
        """The job-table URL, with the embedded SQLite default filled in."""
        return self.database_url or f"sqlite:///{self.home / 'pelletseg.db'}"

    @cached_property
    def resolved_broker_url(self) -> str:
        """The broker URL, with the embedded SQLite transport default filled in."""
        return self.broker_url or f"sqla+sqlite:///{self.home / 'broker.db'}"

    @cached_property
    def resolved_storage_url(self) -> str:
        """The blob store root URL, with the embedded local-folder default filled in."""
        return self.storage_url or (self.home / "store").resolve().as_uri()

    @cached_property
    def resolved_cache_dir(self) -> Path:
        """Local scratch folder for this machine."""
        return self.cache_dir or self.home / "cache"

    @cached_property
    def resolved_export_cache_dir(self) -> Path:
        """Folder of exported graphs (:func:`worker.engine.exported.exported_graph`)."""
        return self.export_cache_dir or self.resolved_cache_dir / "exported"

    def ensure_home(self) -> None:
        """Create ``home`` and the cache folder if missing."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.resolved_cache_dir.mkdir(parents=True, exist_ok=True)


def get_settings(**overrides) -> Settings:
    """Build a :class:`Settings` from the environment, with keyword overrides (e.g. ``home=``)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
