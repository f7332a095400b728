"""The submission service: turn a request into a checked :class:`core.spec.JobSpec`, create the
job row and enqueue its planning task; cancel and resume jobs. The one path for the HTTP API,
the CLI and the benchmarks, so every check (source rules, uploads, webhook URL, registered
model, tile geometry) applies to all of them, with the same messages.

Tasks are sent by name (:mod:`queues`); nothing here imports torch or ``worker``.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from amqp.exceptions import MessageNacked
from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from pydantic import ValidationError

from core.geometry import GeometryError, TileGeometry, model_tile_size
from core.settings import Settings
from core.sources import is_bare_path, local_path, source_scheme
from core.spec import JobSpec
from core.states import JOB_DELETABLE, JOB_TERMINAL, JobStatus
from models import ModelPackage, ModelPackageError, ModelRegistry
from queues import NOTIFY_TASK, PLAN_TASK, REDUCE_TASK, ROW_TASK, make_celery, send
from storage.blobs import BlobStore, UploadStore
from storage.deletion import Deletion, UploadDeletion, delete_job, delete_upload
from storage.errors import NotFoundError, StorageError, TransitionError, UploadError
from storage.jobtable import Job, JobTable, ModelRecord, job_table
from submission.reports import batch_jobs
from submission.sources import SourceRootError, confine_file_source
from webhooks import WebhookUrlError, check_webhook_url

__all__ = ["SubmissionError", "SubmissionService"]

T = TypeVar("T")


def _not_a_file(path: Path) -> str:
    """Why a local source that is not a file cannot be segmented."""
    return "a folder, not an image file" if path.is_dir() else "no such file"


def _file_uri(path: Path) -> str:
    """The ``file://`` URL of an existing local source.

    Raises:
        SubmissionError: its name's bytes are not UTF-8 (a Latin-1 name from a Windows share):
            libvips and pyvips take UTF-8 file names only, so its job would fail "does not
            exist".
    """
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        shown = raw.decode("utf-8", "backslashreplace")
        raise SubmissionError(
            f"{shown}: its name is not UTF-8 (byte 0x{raw[e.start]:02x}), and the image reader "
            "takes UTF-8 file names only: rename the file or folder (e.g. `convmv -f latin1 "
            "-t utf-8 --notest FILE`), or mount the share with iocharset=utf8, and submit it "
            "again") from None
    return path.as_uri()


def _by_status(jobs: list[Job]) -> str:
    """``2 failed, 1 succeeded``: how many of ``jobs`` are in each status."""
    counts = Counter(str(j.status) for j in jobs)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


class SubmissionError(ValueError):
    """A job request is invalid: its source, upload, options, webhook or model (the API
    answers 422 with this message; the CLI prints it)."""


#: Job statuses ``resume`` continues.
RESUMABLE = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)
#: Job statuses a batch's resume continues: the jobs that stopped without being asked to
#: (a cancelled job was stopped by someone and stays so; it is resumed on its own).
BATCH_RESUMABLE = (JobStatus.FAILED, JobStatus.INTERRUPTED)
#: Why a job may not be submitted from an upload that is being deleted.
DELETED_UPLOAD = ("the upload is being deleted or has been deleted (DELETE /v1/uploads); "
                  "upload the image again")


class SubmissionService:
    """Submit, cancel and resume jobs on the stack that ``settings`` name.

    Args:
        settings: The stack (job table, blob store, broker) and the defaults of new jobs.
        table: The job table (default: the one ``settings`` name).
        app: Celery app used to send tasks by name (default: built on first send).
        uploads: Completed uploads that a request may name by ``upload_id`` (default: the
            settings' blob store).
    """

    def __init__(self, settings: Settings, *, table: JobTable | None = None,
                 app: Celery | None = None, uploads: UploadStore | None = None):
        self.settings = settings
        self.table = table or job_table(settings)
        self._app = app
        self._uploads = uploads

    @cached_property
    def app(self) -> Celery:
        """The Celery app tasks are sent with."""
        return self._app or make_celery(self.settings)

    @cached_property
    def blobs(self) -> BlobStore:
        """The blob store (uploads, model packages)."""
        if self._uploads is not None:
            return self._uploads.blobs
        return BlobStore(self.settings.resolved_storage_url)

    @cached_property
    def uploads(self) -> UploadStore:
        """Uploads into the blob store (``uploads/{id}/...``)."""
        if self._uploads is not None:
            return self._uploads
        s = self.settings
        return UploadStore(self.blobs, part_size=s.upload_part_bytes,
                           max_bytes=s.max_upload_bytes)

    @cached_property
    def models(self) -> ModelRegistry:
        """The model registry (model records and their ``model.json``)."""
        return ModelRegistry(self.table, self.blobs, self.settings.resolved_cache_dir)

    # ------------------------------------------------------------------ specs
    def build_spec(
        self,
        source: str | None = None,
        *,
        upload_id: str | None = None,
        model: str | None = None,
        model_version: str | None = None,
        tile_size: int | None = None,
        halo: int | None = None,
        rows_per_task: int | None = None,
        labels: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        confine_files: bool = False,
        pixel_size_um: float | None = None,
        precision: str | None = None,
        significant_bits: int | None = None,
        scene: int | None = None,
    ) -> JobSpec:
        """A checked :class:`JobSpec` for a source URL or path, or a completed upload.

        Left-out options take their defaults: the model ``PELLETSEG_DEFAULT_MODEL`` at its
        newest registered version (the version is stored, so the job runs the package it was
        checked against); the tile geometry of that model package (or the operator's
        ``PELLETSEG_TILE_SIZE``/``PELLETSEG_HALO``), a size or halo given alone keeping the
        other from there; ``rows_per_task`` from the settings. With ``confine_files`` (the
        HTTP API) a file source must resolve inside the source roots
        (:func:`submission.sources.confine_file_source`); ``pixel_size_um`` (µm/px, > 0)
        None: read from the source when the job is planned; ``precision`` (``bf16``,
        ``fp16``, ``fp32``; :attr:`core.spec.JobSpec.precision`) None: each worker's
        ``PELLETSEG_PRECISION``; ``significant_bits`` (8-16, of a 16-bit source;
        :attr:`core.spec.JobSpec.significant_bits`) None: what the file records, else 16;
        ``scene`` (>= 0; :attr:`core.spec.JobSpec.scene`) the image of a multi-image OME-TIFF
        to read, None: its one image (checked when the job is planned).

        Raises:
            SubmissionError: neither or both of ``source`` and ``upload_id``; a source whose
                scheme is not allowed or a local path that does not exist; an unknown upload;
                an unregistered model (the message lists the registered ones); an invalid tile
                geometry or option; a webhook URL that is not public http(s) or without
                ``PELLETSEG_WEBHOOK_SECRET``.
            UploadStateError: the upload is not complete (409 in the API).
            StorageError: the job table or blob store is unreachable.
        """
        if (source is None) == (upload_id is None):
            raise SubmissionError("give either a source URL (or path) or an upload_id")
        source_url = (self._upload_source(upload_id) if upload_id is not None
                      else self.normalise_source(source, confine_files=confine_files))
        record = self._model(model or self.settings.default_model, model_version)
        package = self._package(record)
        if tile_size is None or halo is None:
            default = self.settings.geometry or package.geometry
            tile_size = default.tile_size if tile_size is None else tile_size
            halo = default.halo if halo is None else halo
        try:
            geometry = TileGeometry(tile_size, halo)
        except GeometryError as e:
            raise SubmissionError(str(e)) from e
        try:
            model_tile_size(geometry.tile_size, package.input_scale)
        except GeometryError as e:
            raise SubmissionError(f"model {record.name} {record.version}: {e} (e.g. the "
                                  f"package's {package.tile_size})") from e
        if webhook_url is not None:
            self.check_webhook(webhook_url)
        try:
            return JobSpec(
                source_url=source_url, model=record.name, model_version=record.version,
                tile_size=geometry.tile_size, halo=geometry.halo,
                rows_per_task=rows_per_task or self.settings.rows_per_task,
                labels=labels or {}, webhook_url=webhook_url, pixel_size_um=pixel_size_um,
                precision=precision, edge_tiles="fitted", significant_bits=significant_bits,
                scene=scene,
            )
        except ValidationError as e:
            raise SubmissionError("; ".join(
                (".".join(map(str, err["loc"])) + ": " if err["loc"] else "")
                + err["msg"].removeprefix("Value error, ") for err in e.errors())) from e

    def normalise_source(self, source: str, *, confine_files: bool = False) -> str:
        """A local path becomes an absolute ``file://`` URL; URLs are checked against
        ``PELLETSEG_ALLOWED_SOURCE_SCHEMES`` (local paths count as scheme ``file``). With
        ``confine_files``, ``file`` sources must resolve inside the source roots.

        Raises:
            SubmissionError: the scheme is not allowed, a local path does not exist or its
                name is not UTF-8, or (with ``confine_files``) a file source is outside the
                source roots.
        """
        allowed = self.settings.allowed_source_schemes
        if confine_files and source_scheme(source) == "file" and "file" in allowed:
            try:
                path = confine_file_source(source, self.settings)
            except SourceRootError as e:
                raise SubmissionError(str(e)) from e
            if is_bare_path(source) and not path.is_file():
                raise SubmissionError(f"{source}: {_not_a_file(path)}")
            return _file_uri(path)
        if is_bare_path(source):
            if "file" not in allowed:
                raise SubmissionError(
                    f"{source}: local file paths are not allowed (allowed schemes: "
                    f"{', '.join(allowed)})"
                )
            try:
                path = Path(source).expanduser().resolve()
                found = path.is_file()
            except (RuntimeError, ValueError, OSError) as e:  # '~nobody', NUL bytes, loops
                raise SubmissionError(f"{source!r} is not a usable file path: {e}") from e
            if not found:
                raise SubmissionError(f"{source}: {_not_a_file(path)}")
            return _file_uri(path)
        scheme = source_scheme(source)
        if scheme not in allowed:
            raise SubmissionError(
                f"{source}: scheme {scheme!r} is not allowed (allowed: {', '.join(allowed)})"
            )
        return source

    def check_webhook(self, url: str) -> str:
        """Check a webhook URL against server-side request forgery
        (:func:`webhooks.check_webhook_url`; private addresses pass only with
        ``PELLETSEG_ALLOW_PRIVATE_WEBHOOKS``) and that webhooks can be signed.

        Returns:
            ``url`` unchanged.

        Raises:
            SubmissionError: no ``PELLETSEG_WEBHOOK_SECRET``; wrong scheme, credentials, no
                host, unresolvable host or a non-public address.
        """
        if self.settings.webhook_secret is None:
            raise SubmissionError(
                "webhook_url needs a signing secret on the server: set PELLETSEG_WEBHOOK_SECRET "
                "on the API and the workers (webhooks are never sent unsigned)"
            )
        try:
            return check_webhook_url(url, self.settings.allow_private_webhooks)
        except WebhookUrlError as e:
            raise SubmissionError(str(e)) from e

    def _upload_source(self, upload_id: str) -> str:
        """The source URL of a completed upload, checked against the allowed schemes."""
        try:
            manifest = self.uploads.get(upload_id)
        except NotFoundError as e:
            raise SubmissionError(f"upload_id {upload_id!r}: no such upload") from e
        except UploadError as e:
            raise SubmissionError(f"upload_id {upload_id!r}: {e}") from e
        source = self.uploads.source_url(manifest)
        if self.uploads.deleting(upload_id):
            raise SubmissionError(f"upload_id {upload_id!r}: {DELETED_UPLOAD}")
        scheme = source_scheme(source)
        allowed = self.settings.allowed_source_schemes
        if scheme not in allowed:
            raise SubmissionError(
                f"uploads are stored under {scheme}:// which PELLETSEG_ALLOWED_SOURCE_SCHEMES "
                f"({', '.join(allowed)}) does not allow")
        return source

    def _model(self, name: str, version: str | None) -> ModelRecord:
        """The registered record of model ``name`` at ``version`` (None: the newest)."""
        try:
            return self.models.resolve(name, version)
        except NotFoundError as e:
            raise SubmissionError(str(e)) from e

    def _package(self, record: ModelRecord) -> ModelPackage:
        """The ``model.json`` of a registered model: its geometry (the default of a job that
        names none, unless the operator set ``PELLETSEG_TILE_SIZE``/``PELLETSEG_HALO``) and
        input scale."""
        try:
            return self.models.meta(record.name, record.version)
        except ModelPackageError as e:
            raise SubmissionError(f"model {record.name} {record.version} cannot be used: {e}") \
                from e

    # ------------------------------------------------------------------ jobs
    def submit(self, spec: JobSpec, *, idempotency_key: str | None = None,
               batch_id: str | None = None) -> Job:
        """Create a ``queued`` job (in batch ``batch_id`` if given) and enqueue its planning
        task.

        With an ``idempotency_key`` already used, returns that job and enqueues nothing (also
        when two requests with the same key race: only the one that inserted the job
        enqueues).

        Raises:
            StorageError: the job table or the broker is unreachable, or the broker refused
                the message (a job whose planning task could not be sent is marked failed, to
                be resumed once the broker is back).
        """
        if idempotency_key is not None:
            existing = self.table.jobs.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing
        new_id = str(uuid.uuid4())
        job = self.table.jobs.create(spec, job_id=new_id, idempotency_key=idempotency_key,
                                     batch_id=batch_id)
        if job.id == new_id:
            self._refuse_if_upload_deleted(job.id, spec)
            self._send_or_fail(job.id, [(PLAN_TASK, job.id)])
        return job

    def _refuse_if_upload_deleted(self, job_id: str, spec: JobSpec) -> None:
        """Fail the new job ``job_id`` and raise if its source is an upload that is being
        deleted (or is gone): looked for after the job's row exists, so a deletion either
        sees the job (and is refused) or has marked the upload before this look
        (:func:`storage.deletion.delete_upload`).

        Raises:
            SubmissionError: the upload is being deleted (the job is ``failed``, never run).
        """
        upload_id = self.uploads.id_of(spec.source_url)
        if upload_id is None or not self.uploads.deleting(upload_id):
            return
        self.table.jobs.transition(job_id, JobStatus.FAILED,
                                   error=f"its source, upload {upload_id}: {DELETED_UPLOAD}")
        raise SubmissionError(f"upload_id {upload_id!r}: {DELETED_UPLOAD} (job {job_id} was "
                              "marked failed and not started)")

    def cancel(self, job_id: str) -> Job:
        """Move a job that has not ended to ``cancelled``; workers skip its remaining rows.
        Its webhook, if any, is armed in the same UPDATE and its notify task sent (best
        effort: if the broker is down, the reconciler sends it later).

        Returns:
            The job after the change.

        Raises:
            NotFoundError: no such job.
            TransitionError: the job has already ended (succeeded, failed or cancelled).
            StorageError: the job table is unreachable.
        """
        for _ in range(5):  # a worker may move the job between our read and our UPDATE
            job = self.table.jobs.get(job_id)
            if job.status in JOB_TERMINAL:
                raise TransitionError(f"job {job_id} is {job.status}; only a job that has not "
                                      "ended can be cancelled")
            if self.table.jobs.transition(job_id, JobStatus.CANCELLED):
                self._notify(job_id)
                return self.table.jobs.get(job_id)
        raise TransitionError(f"job {job_id} kept changing status; try again")

    def _notify(self, job_id: str) -> None:
        """Send the notify task of a job whose webhook the last transition armed (best
        effort: if the broker is down, the reconciler's sweep sends it later)."""
        if self.table.webhooks.pending(job_id):
            try:
                send(self.app, NOTIFY_TASK, job_id)
            except (BrokerError, OSError):
                pass

    def rerun(self, job_id: str, *, model: str | None = None, model_version: str | None = None,
              batch_id: str | None = None, confine_files: bool = False,
              pixel_size_um: float | None = None, significant_bits: int | None = None,
              scene: int | None = None) -> Job:
        """Submit a new job on an earlier job's source with its labels, webhook, pixel size,
        precision, significant bits and scene, e.g. once a better model is registered:
        ``model`` (None: the earlier job's model) at ``model_version`` (None: its newest
        version), at that package's tile geometry; ``pixel_size_um``, ``significant_bits``
        and ``scene`` given replace the earlier job's (a corrected pixel size, a 12-bit
        camera's bits after its job was refused, the scene of a multi-image OME-TIFF that was
        refused without one). The new job's labels add ``rerun_of`` (the earlier job's id); the earlier job
        is left as it is (any status, ``deleted`` included: its source is kept).

        Returns:
            The new job (``queued``), in batch ``batch_id`` if given.

        Raises:
            NotFoundError: no such job.
            SubmissionError: the source is gone or no longer allowed, or the model is not
                registered (the message says which).
            StorageError: the job table or the broker is unreachable.
        """
        spec = self._rerun_spec(job_id, model, model_version, confine_files,
                                pixel_size_um=pixel_size_um, significant_bits=significant_bits,
                                scene=scene)
        return self.submit(spec, batch_id=batch_id)

    def _rerun_spec(self, job_id: str, model: str | None, model_version: str | None,
                    confine_files: bool, *, pixel_size_um: float | None = None,
                    significant_bits: int | None = None, scene: int | None = None) -> JobSpec:
        """The checked spec of :meth:`rerun` (raises as it does, before anything is created)."""
        old = JobSpec.from_stored(self.table.jobs.get(job_id).spec)
        key = self.uploads.key_of(old.source_url)
        if key is not None:  # an upload deleted since: say so now
            if not self.blobs.exists(key):
                raise SubmissionError(
                    f"the image of job {job_id} was upload "
                    f"{self.uploads.id_of(old.source_url)}, which has been "
                    f"deleted (DELETE /v1/uploads or PELLETSEG_RETENTION_DAYS); upload the "
                    f"image again and submit it")
        elif source_scheme(old.source_url) == "file":  # a file moved since: say so now
            path = local_path(old.source_url)
            if not path.is_file():
                raise SubmissionError(f"{path}: {_not_a_file(path)} (the image of job "
                                      f"{job_id}); put it back to rerun the job")
        return self.build_spec(
            old.source_url, model=model or old.model, model_version=model_version,
            labels={**old.labels, "rerun_of": job_id}, webhook_url=old.webhook_url,
            pixel_size_um=old.pixel_size_um if pixel_size_um is None else pixel_size_um,
            precision=old.precision,
            significant_bits=old.significant_bits if significant_bits is None else significant_bits,
            scene=old.scene if scene is None else scene, confine_files=confine_files)

    def rerun_batch(self, batch_id: str, *, model: str | None = None,
                    model_version: str | None = None, confine_files: bool = False,
                    pixel_size_um: float | None = None,
                    significant_bits: int | None = None) -> list[Job]:
        """:meth:`rerun` every job of a batch, as one new batch (a new id), in submission
        order, with the same overrides; every source is checked before any job is created.

        Returns:
            The new jobs.

        Raises:
            NotFoundError: no job has this batch id.
            SubmissionError: a source is gone or not allowed, or the model is not registered
                (nothing is submitted).
            StorageError: the job table or the broker is unreachable.
        """
        specs = [self._rerun_spec(job.id, model, model_version, confine_files,
                                  pixel_size_um=pixel_size_um, significant_bits=significant_bits)
                 for job in batch_jobs(self.table, batch_id)]  # all checked before any job
        new_batch = str(uuid.uuid4())
        return [self.submit(spec, batch_id=new_batch) for spec in specs]

    def delete(self, job_id: str) -> Deletion:
        """Delete a job that has ended (or was interrupted) with
        :func:`storage.deletion.delete_job` (the job -> ``deleted``, every object under
        ``jobs/{id}/`` removed, the row kept) and send its webhook's ``deleted`` event. The
        source is not touched: a ``file`` source is the user's file, and an upload
        (``uploads/{id}/``) may feed other jobs (``DELETE /v1/uploads/{id}`` removes it).

        Returns:
            The job after the change, and the objects and bytes removed.

        Raises:
            NotFoundError, TransitionError, StorageError: as
            :func:`storage.deletion.delete_job` (not ended, work still on workers, the
            table or store failed).
        """
        deletion = delete_job(self.table, self.blobs, job_id,
                              lease_seconds=self.settings.lease_seconds)
        self._notify(job_id)
        return deletion

    def delete_upload(self, upload_id: str) -> UploadDeletion:
        """Delete an upload, finished or not (:func:`storage.deletion.delete_upload`): refused
        while a job that reads it has not ended, since a resume re-reads the source; jobs that
        ended keep their outputs.

        Returns:
            The upload's id and the objects and bytes removed.

        Raises:
            NotFoundError: no such upload.
            TransitionError: a job that reads it has not ended (named in the message).
            StorageError: the store failed.
        """
        return delete_upload(self.table, self.uploads, upload_id)

    def delete_batch(self, batch_id: str) -> list[Deletion]:
        """Delete every job of a batch that has ended or was interrupted (:meth:`delete`
        each); jobs still running are left (cancel them first), and so is a job with rows
        still on workers.

        Returns:
            The jobs deleted, in submission order.

        Raises:
            NotFoundError: no job has this batch id.
            TransitionError: no job of the batch can be deleted (the message counts its jobs
                by status).
            StorageError: the job table or the store failed (those deleted before stay so).
        """
        return self._each_of_batch(
            batch_id, lambda job: job.status in JOB_DELETABLE, self.delete,
            "has no job to delete: only jobs that have ended or were interrupted can be "
            "({counts})")

    def cancel_batch(self, batch_id: str) -> list[Job]:
        """Cancel every job of a batch that has not ended (:meth:`cancel` each); a job that
        ends meanwhile is passed over.

        Returns:
            The jobs cancelled, in submission order.

        Raises:
            NotFoundError: no job has this batch id.
            TransitionError: every job of the batch has ended (the message counts them by
                status).
            StorageError: the job table is unreachable (the jobs cancelled before stay so).
        """
        return self._each_of_batch(
            batch_id, lambda job: job.status not in JOB_TERMINAL, self.cancel,
            "has no job left to cancel: every job has ended ({counts})")

    def resume(self, job_id: str, *, abandoned_ok: bool = False) -> Job:
        """Resume a ``failed``, ``cancelled`` or ``interrupted`` job where it stopped; with
        ``abandoned_ok`` (``pelletseg resume`` on a local stack) also one left
        ``queued``/``planning``/``running``/``reducing`` by a stack that died (no live worker
        heartbeat and no live row lease: :meth:`abandoned`).

        - never planned (no rows, or planning did not finish): job -> ``queued``, enqueue
          ``plan_job``;
        - every row done: job -> ``reducing``, enqueue only ``reduce_job``;
        - otherwise: job -> ``running``, every row that is not done -> ``pending`` (attempts
          restart), enqueue ``segment_row`` for each of them.

        Returns:
            The job after the change.

        Raises:
            NotFoundError: no such job.
            TransitionError: the job is not failed or cancelled (or changed concurrently).
            StorageError: the job table or the broker is unreachable (the job is failed again).
        """
        table = self.table
        job = table.jobs.get(job_id)
        if job.status not in RESUMABLE and abandoned_ok and self.abandoned(job_id):
            # nothing moves it: mark it interrupted (conditional), then resume as usual
            table.jobs.transition(job_id, JobStatus.INTERRUPTED, expected=JobStatus(job.status))
            job = table.jobs.get(job_id)
        if job.status not in RESUMABLE:
            raise TransitionError(
                f"job {job_id} is {job.status}; only failed, cancelled or interrupted jobs can be "
                "resumed" + (" (or jobs whose workers all died)" if abandoned_ok else "")
            )
        progress = table.rows.progress(job_id)
        planned = progress.total > 0 and job.rows_total is not None
        if not planned:
            # Planning did not finish: plan again (rows it inserted are kept, reset to pending).
            target, tasks = JobStatus.QUEUED, [(PLAN_TASK, job_id)]
        elif progress.done == progress.total:
            target, tasks = JobStatus.REDUCING, [(REDUCE_TASK, job_id)]
        else:
            target, tasks = JobStatus.RUNNING, []
        if not table.jobs.transition(job_id, target, error=None, finished_at=None):
            raise TransitionError(f"job {job_id} changed status while resuming; try again")
        if target == JobStatus.RUNNING:
            tasks = [(ROW_TASK, job_id, index)
                     for index in table.recovery.reset_rows_for_resume(job_id)]
        elif target == JobStatus.QUEUED and progress.total:
            table.recovery.reset_rows_for_resume(job_id)
        self._send_or_fail(job_id, tasks)
        return table.jobs.get(job_id)

    def resume_batch(self, batch_id: str, *, abandoned_ok: bool = False) -> list[Job]:
        """Resume every ``failed`` or ``interrupted`` job of a batch (:meth:`resume` each; with
        ``abandoned_ok`` also those a dead local stack left unfinished); its succeeded, running
        and cancelled jobs are left as they are. A job that changed meanwhile (e.g. resumed
        from elsewhere) is passed over.

        Returns:
            The jobs resumed, in submission order.

        Raises:
            NotFoundError: no job has this batch id.
            TransitionError: no job of the batch can be resumed (the message counts its jobs
                by status).
            StorageError: the job table or the broker is unreachable (the job being resumed
                is failed again; those resumed before it stay resumed).
        """
        return self._each_of_batch(
            batch_id,
            lambda job: job.status in BATCH_RESUMABLE or (abandoned_ok and self.abandoned(job.id)),
            lambda job_id: self.resume(job_id, abandoned_ok=abandoned_ok),
            "has no failed or interrupted job to resume ({counts}); a cancelled job is "
            "resumed on its own: pelletseg resume JOB_ID")

    def _each_of_batch(self, batch_id: str, eligible: Callable[[Job], bool],
                       act: Callable[[str], T], none: str) -> list[T]:
        """``act(job id)`` for each job of a batch that is ``eligible``, in submission order,
        passing over a job that changed meanwhile (``act`` raised :class:`TransitionError`).

        Returns:
            What ``act`` returned for each job it acted on.

        Raises:
            NotFoundError: no job has this batch id.
            TransitionError: it acted on no job: ``batch ID`` and ``none``, whose
                ``{counts}`` says how many jobs are in each status.
        """
        jobs = batch_jobs(self.table, batch_id)
        done: list[T] = []
        for job in jobs:
            if eligible(job):
                try:
                    done.append(act(job.id))
                except TransitionError:
                    continue
        if not done:
            raise TransitionError(f"batch {batch_id} " + none.format(counts=_by_status(jobs)))
        return done

    def abandoned(self, job_id: str) -> bool:
        """True if a job that has not ended is left with nothing moving it: no worker of the
        stack has a live heartbeat and none of its rows has a live lease (e.g. the local
        stack of a ``pelletseg run`` that was killed; a lease held by a worker whose heartbeat
        stopped is not live)."""
        job = self.table.jobs.get(job_id)
        if job.status in JOB_TERMINAL or job.status == JobStatus.INTERRUPTED:
            return False
        if self.table.heartbeats.live():
            return False
        leased = self.table.rows.leased(job_id)
        # a lease whose holder's heartbeat stopped is not live; one of a holder that never
        # beat (an older worker) is, until it expires
        dead = self.table.heartbeats.registered([w for w in leased if w])
        return all(w in dead for w in leased)

    def _send_or_fail(self, job_id: str, tasks: list[tuple]) -> None:
        """Send ``(task, *args)`` messages; if the broker is unreachable past its retries or
        refuses a message (RabbitMQ's publisher confirm answered nack: a queue full, a message
        over ``max_message_size``), fail the job (so that it can be resumed later) and raise
        :class:`StorageError`."""
        try:
            for task, *args in tasks:
                send(self.app, task, *args)
        except (BrokerError, OSError, MessageNacked) as e:
            if isinstance(e, MessageNacked):
                why, then = "the broker refused the message", "once its limits allow it"
            else:
                why, then = "the broker is unreachable", "when the broker is back"
            self.table.jobs.transition(job_id, JobStatus.FAILED,
                                       error=f"could not enqueue work: {why}: {e}")
            raise StorageError(
                f"{why} ({e}); job {job_id} was marked failed: resume it {then}"
            ) from e
