"""Streaming stitcher, ``pelletseg.stitch`` (with ``PELLETSEG_STREAM_REDUCE``): the label
pyramid, overlay and preview written while the rows run, so that only the fractions are left
after the last row.

Planning enqueues one stitch task per job on the ``reduce`` queue. It takes the job's stitch
lease (:mod:`storage.jobtable.stitch_leases`), feeds each row strip to the two streaming libvips
pipelines of :func:`imaging.rendering.write_pictures` as soon as the row is ``done`` (rows are
stitched top to bottom, so it waits for row k before row k+1), and each row's confidence strip
to a third that writes ``confidence.tif``; stores the pictures (and the confidence pyramid)
under the job's output keys, then a manifest (``stitched.json``: the index and checksum of
every row it stitched, and whether it stored the confidence pyramid), and releases the lease.
A confidence pyramid that fails (rows checkpointed without confidence strips) is left to the
reducer and does not stop the pictures.

The reducer (:func:`wait_for_stitcher`) waits while the lease is live and uses the pictures
(and the confidence pyramid, :class:`Staged`) only if the manifest names exactly the job's done
rows and checksums; otherwise it stitches the rows itself, as without streaming.
So a stitcher that dies, loses its lease, or whose message is lost costs time, never a wrong
output; a duplicate delivery finds the lease taken (or the manifest written) and does nothing.
A stitcher never fails a job: the reducer decides.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyvips
import structlog

from core.states import RowStatus
from imaging.rendering import write_pictures
from imaging.stitching import StripStream
from storage.blobs.layout import (
    CONFIDENCE,
    PICTURES,
    STITCH_MANIFEST,
    confidence_row_key,
    output_key,
)
from storage.errors import BlobNotFoundError, StorageError
from storage.jobtable.stitch_leases import STITCHABLE
from storage.jobtable.tables import Job, Row
from worker.cache import job_folder
from worker.context import WorkerContext
from worker.errors import PERMANENT_ERRORS, WorkerError
from worker.leases import Renewal
from worker.stages.confidence import write_confidence_pyramid
from worker.stages.measuring import job_pixel_size
from worker.stages.sources import row_thumbnails, source_path

log = structlog.get_logger(__name__)

#: Manifest format version (``stitched.json``; 2: with ``confidence``).
MANIFEST_VERSION = 2


class StitchAbandoned(WorkerError):
    """The streaming stitch stopped before the last row: the job ended (failed, cancelled),
    the stitcher lost its lease, or a picture pipeline failed."""


class RowFeed:
    """The local strip files of a job's rows in index order, each handed out once its row is
    ``done``; shared by the picture pipelines of one stitch (thread-safe).

    Args:
        ctx: Worker context (job table, blob store).
        job_id: The job.
        n_rows: Number of row records.
        poll_seconds: Pause between two looks at the job table while a row is not done (s).
        lease: The stitcher's lease renewal (a lost lease abandons the stitch).
    """

    def __init__(self, ctx: WorkerContext, job_id: str, n_rows: int, poll_seconds: float,
                 lease: Renewal | None = None):
        self.ctx, self.job_id, self.n_rows = ctx, job_id, n_rows
        self.poll_seconds, self.lease = poll_seconds, lease
        #: (index, checksum) of the rows handed out, in order
        self.stitched: list[tuple[int, str]] = []
        self.cancelled = threading.Event()
        self._paths: dict[int, Path] = {}
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """Make every waiting :meth:`paths` iterator raise :class:`StitchAbandoned`."""
        self.cancelled.set()

    def paths(self, stop: threading.Event) -> Iterator[Path]:
        """Yield the strip file of rows 0, 1, ..., blocking until each row is done.

        Raises:
            StitchAbandoned: ``stop`` or :meth:`cancel` was set, the lease was lost, or the job
                is no longer ``running`` / ``reducing``.
            StorageError: the job table or store is unreachable.
        """
        for index in range(self.n_rows):
            yield self._wait(index, stop)

    def confidence_paths(self, stop: threading.Event) -> Iterator[Path]:
        """Yield the confidence strip file of rows 0, 1, ..., blocking until each row is done
        (a row stores it before its label checkpoint).

        Raises:
            StitchAbandoned, StorageError: as :meth:`paths`.
            BlobNotFoundError: a done row has no confidence strip (checkpointed before
                confidence existed).
        """
        for index in range(self.n_rows):
            self._wait(index, stop)
            yield self.ctx.local_blob(confidence_row_key(self.job_id, index))

    def _wait(self, index: int, stop: threading.Event) -> Path:
        while True:
            with self._lock:  # one download per strip, even for two pipelines
                if index in self._paths:
                    return self._paths[index]
                row = self.ctx.table.rows.get(self.job_id, index)
                if row.status == RowStatus.DONE:
                    self._paths[index] = self.ctx.local_blob(row.blob_key)
                    self.stitched.append((index, row.checksum))
                    return self._paths[index]
            self._check(stop)
            stop.wait(self.poll_seconds)

    def _check(self, stop: threading.Event) -> None:
        if stop.is_set() or self.cancelled.is_set():
            raise StitchAbandoned(f"job {self.job_id}: stitch stopped")
        if self.lease is not None and self.lease.lost.is_set():
            raise StitchAbandoned(f"job {self.job_id}: stitch lease lost")
        status = self.ctx.table.jobs.get(self.job_id).status
        if status not in STITCHABLE:
            raise StitchAbandoned(f"job {self.job_id} is {status}")


def _manifest(job: Job, stitched: Sequence[tuple[int, str]]) -> dict:
    return {"version": MANIFEST_VERSION, "job_id": job.id, "width": job.width,
            "height": job.height, "model_sha256": job.model_sha256,
            "rows": [[i, c] for i, c in stitched]}


def _matching_manifest(ctx: WorkerContext, job: Job, rows: Sequence[Row]) -> dict | None:
    """The stitcher's manifest if it exists and matches ``rows`` (all done, same indices and
    checksums), the job's size and model; else None."""
    try:
        stored = json.loads(ctx.blobs.get_bytes(output_key(job.id, STITCH_MANIFEST)))
    except BlobNotFoundError:
        return None
    except ValueError:  # a torn or foreign file: not ours to trust
        return None
    if any(r.status != RowStatus.DONE for r in rows) or not isinstance(stored, dict):
        return None
    expected = _manifest(job, [(r.index, r.checksum) for r in rows])
    if {k: v for k, v in stored.items() if k != "confidence"} != expected:
        return None
    return stored


@dataclass(frozen=True)
class Staged:
    """What a stitcher stored for a job that the reducer can use as it is: ``pictures`` (the
    label pyramid, preview and overlay, :data:`PICTURES`) and ``confidence`` (the confidence
    pyramid; only ever with the pictures)."""

    pictures: bool = False
    confidence: bool = False


def staged_outputs(ctx: WorkerContext, job: Job, rows: Sequence[Row]) -> Staged:
    """What a stitcher staged for ``job``, read from its manifest once: the pictures if the
    manifest exists and matches ``rows`` (all done, same indices and checksums), the job's size
    and model, and every picture it stored exists; the confidence pyramid if, besides, the
    manifest says it was stored and it exists.

    Raises:
        StorageError: the store is unreachable.
    """
    manifest = _matching_manifest(ctx, job, rows)
    if manifest is None or not all(ctx.blobs.exists(output_key(job.id, n)) for n in PICTURES):
        return Staged()
    return Staged(pictures=True, confidence=manifest.get("confidence") is True
                  and ctx.blobs.exists(output_key(job.id, CONFIDENCE)))


def wait_for_stitcher(ctx: WorkerContext, job: Job, rows: Sequence[Row],
                      sleep: Callable[[float], None] = time.sleep) -> Staged:
    """The reducer's side: wait while a stitcher holds a live lease on ``job``, then say what
    of its staged outputs can be used (:func:`staged_outputs`).

    Only the job table is polled while waiting: a stitcher stores its manifest before it
    releases its lease, so the manifest is read once, after the lease is no longer live.
    Returns at once for a job that never had a stitcher.

    Raises:
        StorageError: the job table or store is unreachable.
    """
    waited = 0.0
    while True:
        holder, live = ctx.table.stitch.state(job.id)
        if holder is None:  # no stitcher ever ran: do not look for a manifest
            return Staged()
        if not live:
            break
        sleep(ctx.settings.stitch_poll_seconds)
        waited += ctx.settings.stitch_poll_seconds
    staged = staged_outputs(ctx, job, rows)
    log.info("reduce.staged" if staged.pictures else "reduce.stitcher_gone", job_id=job.id,
             confidence=staged.confidence, waited=round(waited, 3))
    return staged


def stitch_job(ctx: WorkerContext, job_id: str) -> bool:
    """Write a job's pictures while its rows run (see the module's docstring); idempotent.

    Returns:
        True if valid staged pictures exist when it ends (written now or by an earlier run);
        False if it skipped (job not running/reducing, lease held by another stitcher) or gave
        up (logged; the reducer stitches the rows itself).
    """
    job = ctx.table.jobs.get(job_id)
    if job.status not in STITCHABLE:
        log.info("stitch.skip", job_id=job_id, status=job.status)
        return False
    holder = f"{ctx.worker_id}:stitch-{uuid.uuid4().hex[:8]}"
    lease_s = ctx.settings.stitch_lease_seconds
    if not ctx.table.stitch.claim(job_id, holder, lease_s):
        log.info("stitch.skip", job_id=job_id, reason="another stitcher holds the lease")
        return False
    work = job_folder(ctx.cache_dir, job_id) / holder.rsplit(":", 1)[-1]
    started = time.perf_counter()
    try:
        renewal = Renewal(lambda: ctx.table.stitch.extend(job_id, holder, lease_s),
                          lease_s / 3, "stitch", job_id=job_id)
        with renewal:
            rows = ctx.table.rows.list(job_id)
            if staged_outputs(ctx, job, rows).pictures:
                log.info("stitch.skip", job_id=job_id, reason="already stitched")
                return True
            pkg = ctx.models.meta(job.model_name, job.model_version)
            feed = RowFeed(ctx, job_id, len(rows), ctx.settings.stitch_poll_seconds, renewal)
            log.info("stitch.start", job_id=job_id, rows=len(rows))
            # leaving the block waits for the confidence pyramid, which a failed picture
            # pipeline stops through feed.cancel
            with ThreadPoolExecutor(1, thread_name_prefix=f"stitch-{job_id[:8]}") as pool:
                confidence = pool.submit(_stream_confidence, job, feed, work)
                write_pictures(source_path(ctx, job),
                               StripStream(feed.paths, job.width, job.height),
                               pkg.palette(), work, names=[c.name for c in pkg.classes],
                               abandon=feed.cancel, pixel_size_um=job_pixel_size(job),
                               thumbnails=lambda: row_thumbnails(ctx, job,
                                                                 ctx.table.rows.list(job_id)))
                with_confidence = confidence.result()
            if renewal.lost.is_set():
                raise StitchAbandoned(f"job {job_id}: stitch lease lost")
            for name in (*PICTURES, CONFIDENCE) if with_confidence else PICTURES:
                ctx.blobs.put_file(output_key(job_id, name), work / name)
            manifest = {**_manifest(job, feed.stitched), "confidence": with_confidence}
            ctx.blobs.put_bytes(output_key(job_id, STITCH_MANIFEST),
                                json.dumps(manifest, indent=1).encode())
    except (StitchAbandoned, StorageError, *PERMANENT_ERRORS, ValueError, pyvips.Error) as e:
        log.warning("stitch.abandoned", job_id=job_id, error=str(e))
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            ctx.table.stitch.release(job_id, holder)
        except StorageError as e:  # the lease expires by itself
            log.warning("stitch.release_failed", job_id=job_id, error=str(e))
    log.info("stitch.done", job_id=job_id, seconds=round(time.perf_counter() - started, 3))
    return True


def _stream_confidence(job: Job, feed: RowFeed, work: Path) -> bool:
    """Write ``work/confidence.tif`` from the rows' confidence strips as the rows finish
    (:func:`worker.stages.confidence.write_confidence_pyramid`); False, logged, when it cannot
    (a row without a confidence strip, the stitch stopped): the reducer writes it then."""
    try:
        write_confidence_pyramid(StripStream(feed.confidence_paths, job.width, job.height),
                                 work / CONFIDENCE, pixel_size_um=job_pixel_size(job))
    except (StitchAbandoned, StorageError, *PERMANENT_ERRORS, ValueError, pyvips.Error) as e:
        log.warning("stitch.confidence_left_to_reducer", job_id=job.id, error=str(e))
        return False
    return True
