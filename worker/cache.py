"""The worker's local disk cache (``PELLETSEG_CACHE_DIR``), and when a job's part of it goes.

What a worker keeps of a job lives in two folders named by the job's id:

- ``{cache}/jobs/{job}/``: its scratch (the planner's conversion, the reducer's and the
  streaming stitcher's outputs before upload) and its downloaded original
  (``original/``, :func:`worker.stages.sources.localize`);
- ``{cache}/blobs/jobs/{job}/``: copies of its blobs from a remote store (the converted
  ``source.tif``, the nodata mask, row strips and confidence rows the reducer stitches:
  :meth:`storage.blobs.BlobStore.local_file`). A local store's blobs are read in place and
  never copied here.

Nothing else removes them, and a gigapixel pellet leaves gigabytes: a long-lived worker would
fill its disk (the Kubernetes workers' ``emptyDir`` has a ``sizeLimit``, past which the kubelet
evicts the pod). :func:`sweep` removes the folders of jobs that no longer run (succeeded,
failed, cancelled, interrupted, deleted, or unknown to the job table); a job that runs keeps
its files, and a resumed one downloads again what it needs. Every worker process that
reconciles runs it every :data:`SWEEP_SECONDS` (``worker/liveness.py``), and the reducer
removes its own job's folders as the job succeeds. Model packages and exported graphs
(``{cache}/blobs/models``, ``{cache}/exported``) are kept.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import structlog

from core.states import JobStatus

log = structlog.get_logger(__name__)

__all__ = ["DOWNLOADS", "JOBS", "LIVE", "SWEEP_SECONDS", "download_path", "job_folder",
           "job_folders", "remove_job", "sweep"]

#: The folder of per-job folders, under the cache and under its copies of remote blobs.
JOBS = "jobs"
#: Statuses in which a job's cached files may still be read.
LIVE = frozenset({JobStatus.QUEUED, JobStatus.PLANNING, JobStatus.RUNNING, JobStatus.REDUCING})
#: Partial downloads, outside the job folders, so that a sweep never takes a file being written
#: (the finished file is moved into its job's folder).
DOWNLOADS = "downloads"
#: How often (s) a worker process sweeps.
SWEEP_SECONDS = 60.0


def job_folder(cache_dir: Path, job_id: str) -> Path:
    """``{cache}/jobs/{job}``: the job's scratch and downloaded original on this machine."""
    return cache_dir / JOBS / job_id


def _roots(cache_dir: Path, remote_store: bool) -> list[Path]:
    roots = [cache_dir / JOBS]
    if remote_store:
        roots.append(cache_dir / "blobs" / JOBS)
    return roots


def job_folders(cache_dir: Path, remote_store: bool) -> dict[str, list[Path]]:
    """The per-job folders under ``cache_dir``, and partial downloads a killed process left
    (:func:`download_path`): job id -> its paths.

    Args:
        remote_store: Whether the blob store is remote (then ``blobs/jobs`` holds copies);
            never True for a local store, whose blobs are not copies.
    """
    found: dict[str, list[Path]] = {}
    for root in _roots(cache_dir, remote_store):
        if root.is_dir():
            for folder in root.iterdir():
                if folder.is_dir():
                    found.setdefault(folder.name, []).append(folder)
    downloads = cache_dir / DOWNLOADS
    if downloads.is_dir():
        for part in downloads.iterdir():
            found.setdefault(part.name.split(".", 1)[0], []).append(part)
    return found


def download_path(cache_dir: Path, job_id: str) -> Path:
    """A fresh name under ``{cache}/downloads`` for a download of ``job_id``'s (one per process
    and thread, so concurrent downloads never share one)."""
    folder = cache_dir / DOWNLOADS
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{job_id}.{os.getpid()}.{threading.get_ident()}.part"


def remove_job(cache_dir: Path, remote_store: bool, job_id: str) -> None:
    """Remove ``job_id``'s folders from the cache (none there: nothing to do). A file another
    process has open stays readable to it until closed (POSIX)."""
    for root in _roots(cache_dir, remote_store):
        shutil.rmtree(root / job_id, ignore_errors=True)
    for part in (cache_dir / DOWNLOADS).glob(f"{job_id}.*.part"):
        part.unlink(missing_ok=True)


def sweep(cache_dir: Path, remote_store: bool, statuses) -> list[str]:
    """Remove the cached folders of jobs that no longer run (status not in :data:`LIVE`, or
    no such job).

    Args:
        cache_dir: The worker's cache folder.
        remote_store: Whether the blob store is remote (:func:`job_folders`).
        statuses: Callable: job ids -> ``{id: JobStatus}`` of those the job table has
            (:meth:`storage.jobtable.job_records.JobRecords.statuses`).

    Returns:
        Ids of the jobs whose folders were removed.

    Raises:
        StorageError: the job table is unreachable (nothing is removed).
    """
    folders = job_folders(cache_dir, remote_store)
    if not folders:
        return []
    known = statuses(list(folders))
    removed = [job_id for job_id in folders if known.get(job_id) not in LIVE]
    for job_id in removed:
        remove_job(cache_dir, remote_store, job_id)
    if removed:
        log.info("cache.swept", jobs=len(removed), statuses=sorted(
            {str(known.get(j, "unknown")) for j in removed}))
    return removed
