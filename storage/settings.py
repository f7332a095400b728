"""Per-machine settings: one ``Settings`` object read from ``PELLETSEG_*`` environment variables.

Per-run options (tile size, model, labels) live in the versioned :class:`storage.spec.JobSpec`
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

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Defaults for new jobs (each job stores its own copy in its JobSpec).
    default_model: str = Field("ebc-unet-mnv2", description="Model name used when a job names none.")
    tile_size: int = Field(1024, description="Tile edge T fed to the model (px).", ge=32)
    halo: int = Field(
        128, description="Context kept on each side of a tile and cropped (px).", ge=0
    )
    rows_per_task: int = Field(1, description="Tile rows per segment_row task.", ge=1)
    # Worker behaviour.
    batch_size: int = Field(
        0, description="Tiles per forward pass; 0 = auto (1 on CPU, 8 on CUDA).", ge=0
    )
    device: str = Field("auto", description="Torch device: auto, cpu, cuda, cuda:N.")
    torch_threads: int = Field(0, description="torch intra-op threads per worker; 0 = torch default.")
    channels_last: bool = Field(True, description="Run the model in channels_last memory format.")
    lease_seconds: int = Field(
        600, description="How long a claimed row stays leased before another worker may take it (s)."
    )
    max_attempts: int = Field(3, description="Attempts per row before the row and its job fail.")
    pending_timeout_seconds: int = Field(
        1800,
        description="A row still pending this long after it was enqueued is enqueued again "
        "(its message was lost, e.g. with a worker killed between delivery and claim) (s).",
    )
    max_pixels: int = Field(
        4_000_000_000, description="Largest accepted image (pixels); guards against decompression bombs."
    )
    allowed_source_schemes: list[str] = Field(
        default_factory=lambda: ["file", "s3", "gs", "memory"],
        description="URL schemes a job's source may use.",
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

    def ensure_home(self) -> None:
        """Create ``home`` and the cache folder if missing."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.resolved_cache_dir.mkdir(parents=True, exist_ok=True)


def get_settings(**overrides) -> Settings:
    """Build a :class:`Settings` from the environment, with keyword overrides (e.g. ``home=``)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
