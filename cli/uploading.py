"""Client side of ``POST /v1/uploads``: send a local file in parts, in parallel, with a
progress bar, and resume an interrupted upload from the parts that already arrived.

Which upload a file belongs to is kept in a small ledger in the user's application folder
(:func:`default_ledger`: ``~/.config/pelletseg/uploads/*.json`` on Linux, ``click.get_app_dir``
elsewhere; one record per API URL and absolute path, valid while the file's size and mtime
are unchanged), so running ``pelletseg submit`` again after a broken connection (or a killed
process) asks the API which parts arrived and sends only the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from cli.client import ApiClient, ClientError

URL_BATCH = 100


@dataclass
class UploadLedger:
    """Records of uploads in progress: ``folder/{sha256(api URL, path)}.json``."""

    folder: Path

    def _file(self, api_url: str, path: Path) -> Path:
        digest = hashlib.sha256(f"{api_url}\n{path.resolve()}".encode()).hexdigest()[:32]
        return self.folder / f"{digest}.json"

    def find(self, api_url: str, path: Path) -> str | None:
        """The upload id recorded for ``path`` if the file is unchanged since, else None."""
        try:
            record = json.loads(self._file(api_url, path).read_text())
        except (OSError, ValueError):
            return None
        stat = path.stat()
        if (record.get("size"), record.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
            return None
        return record.get("upload_id")

    def record(self, api_url: str, path: Path, upload_id: str) -> None:
        """Remember that ``path`` (as it is now) goes to ``upload_id``."""
        stat = path.stat()
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._file(api_url, path)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps({"api": api_url, "path": str(path.resolve()),
                                   "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                   "upload_id": upload_id}))
        os.replace(tmp, target)

    def forget(self, api_url: str, path: Path) -> None:
        """Drop the record of ``path`` (its job was submitted)."""
        self._file(api_url, path).unlink(missing_ok=True)


def default_ledger() -> UploadLedger:
    """The user's ledger: ``{click.get_app_dir("pelletseg")}/uploads`` (``~/.config/pelletseg``
    on Linux, following ``XDG_CONFIG_HOME``): a client needs no stack folder."""
    return UploadLedger(Path(click.get_app_dir("pelletseg")) / "uploads")


def _retryable(e: BaseException) -> bool:
    return isinstance(e, ClientError) and e.retryable


def upload_file(
    client: ApiClient,
    path: Path,
    ledger: UploadLedger,
    *,
    part_size: int | None = None,
    concurrency: int = 4,
    attempts: int = 5,
    progress: Callable[[int, int], Callable[[int], object]] | None = None,
) -> dict:
    """Upload ``path`` through the API and complete it; resumes a recorded upload of the same
    file (same size and mtime), sending only the parts the API does not have.

    Args:
        part_size: Part size (bytes, >= 5 MiB); default: the server's.
        concurrency: Parts sent at once.
        attempts: Tries per part (exponential backoff between them; an expired presigned URL
            is renewed).
        progress: ``progress(total, done) -> advance(n)``: called once with the file size and
            the bytes already uploaded; ``advance`` is called as bytes go out (negative after
            a failed try of a part).

    Returns:
        The completed upload (``GET /v1/uploads/{id}`` document).

    Raises:
        ClientError: the API refused, or a part kept failing (run the command again to
            resume from the parts that arrived).
    """
    path = Path(path)
    size = path.stat().st_size
    info = None
    upload_id = ledger.find(client.base_url, path)
    if upload_id is not None:
        try:
            info = client.upload(upload_id)
        except ClientError as e:
            if e.status != 404:
                raise
    if info is None or info["size"] != size:
        info = client.create_upload(path.name, size, part_size)
        ledger.record(client.base_url, path, info["id"])
    if info["complete"]:
        return info
    upload_id, n_parts, psize = info["id"], info["parts"], info["part_size"]

    def length(n: int) -> int:
        return min(psize, size - (n - 1) * psize)

    arrived = {p["number"] for p in info["parts_uploaded"] if p["size"] == length(p["number"])}
    advance = (progress or (lambda total, done: lambda n: None))(
        size, sum(length(n) for n in arrived))
    lock = threading.Lock()
    urls = {int(k): v for k, v in info.get("urls", {}).items()}
    todo = [n for n in range(1, n_parts + 1) if n not in arrived]

    def send(n: int) -> None:
        for attempt in Retrying(stop=stop_after_attempt(attempts), reraise=True,
                                wait=wait_exponential(multiplier=0.5, max=15),
                                retry=retry_if_exception(_retryable)):
            with attempt:
                sent = 0

                def tick(k: int) -> None:
                    nonlocal sent
                    sent += k
                    advance(k)

                try:
                    client.put_part(urls[n], path, (n - 1) * psize, length(n), tick)
                except ClientError as e:
                    advance(-sent)
                    if e.status == 403 and e.retryable:  # the presigned URL expired
                        with lock:
                            urls.update(client.upload_urls(upload_id, [n]))
                    raise

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for start in range(0, len(todo), URL_BATCH):
            batch = todo[start:start + URL_BATCH]
            missing = [n for n in batch if n not in urls]
            if missing:
                urls.update(client.upload_urls(upload_id, missing))
            list(pool.map(send, batch))  # re-raises the first part that kept failing
    return client.complete_upload(upload_id)
