"""What the routes depend on, built once per app from its settings, and the typed FastAPI
dependency aliases routes declare them with (``table: TableDep``), after
full-stack-fastapi-template's ``SessionDep``."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from core.settings import Settings
from queues import make_celery
from storage.blobs import BlobStore, UploadStore
from storage.jobtable import JobTable, job_table
from submission import SubmissionService

__all__ = ["BlobsDep", "Services", "SettingsDep", "SubmissionsDep", "TableDep", "UploadsDep",
           "services"]


class Services:
    """What the routes use, built lazily from ``settings`` (``app.state.services``)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def table(self) -> JobTable:
        """The job table."""
        return job_table(self.settings)

    @cached_property
    def blobs(self) -> BlobStore:
        """The blob store (outputs)."""
        return BlobStore(self.settings.resolved_storage_url)

    @cached_property
    def uploads(self) -> UploadStore:
        """Uploads into the blob store (``uploads/{id}/...``)."""
        return UploadStore(self.blobs, part_size=self.settings.upload_part_bytes,
                           max_bytes=self.settings.max_upload_bytes)

    @cached_property
    def celery(self) -> Celery:
        """A Celery app used only to send tasks by name (and to ping the broker)."""
        return make_celery(self.settings, main="pelletseg-api")

    @cached_property
    def submissions(self) -> SubmissionService:
        """The submission service."""
        return SubmissionService(self.settings, table=self.table, uploads=self.uploads,
                                 app=self.celery)


def services(request: Request) -> Services:
    """The app's :class:`Services`."""
    return request.app.state.services


def _settings(request: Request) -> Settings:
    return request.app.state.services.settings


def _table(request: Request) -> JobTable:
    return request.app.state.services.table


def _blobs(request: Request) -> BlobStore:
    return request.app.state.services.blobs


def _uploads(request: Request) -> UploadStore:
    return request.app.state.services.uploads


def _submissions(request: Request) -> SubmissionService:
    return request.app.state.services.submissions


SettingsDep = Annotated[Settings, Depends(_settings)]
TableDep = Annotated[JobTable, Depends(_table)]
BlobsDep = Annotated[BlobStore, Depends(_blobs)]
UploadsDep = Annotated[UploadStore, Depends(_uploads)]
SubmissionsDep = Annotated[SubmissionService, Depends(_submissions)]
