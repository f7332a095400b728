"""Parts of uploads to the local store (``file://``), on disk: each part streamed to a temp
file, fsynced and renamed into place with a ``NNNNN.json`` (size, MD5) beside it, so a part is
there whole or not at all; completion concatenates them in the kernel (``copy_file_range``).
Used by :class:`storage.blobs.uploads.UploadStore`; S3 keeps its parts itself."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass

from storage.errors import StorageError, UploadError


@dataclass(frozen=True)
class Part:
    """A part that arrived: its number (1-based), size (bytes) and ETag (hex MD5)."""

    number: int
    size: int
    etag: str


def list_parts(folder: str) -> list[Part]:
    """The parts committed in ``folder`` (``NNNNN`` + ``NNNNN.json``), by number."""
    parts = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not re.fullmatch(r"\d{5}\.json", name):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue  # being replaced by a retry of that part
        parts.append(Part(int(name[:5]), int(meta["size"]), meta["etag"]))
    return parts


def assemble(folder: str, parts: list[Part], final: str) -> None:
    """Concatenate ``parts`` (in order) from ``folder`` into ``final`` (temp file, fsync,
    rename), then delete ``folder``.

    Raises:
        OSError: reading, writing or renaming failed (nothing is left half-written).
    """
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(os.path.join(folder, f"{part.number:05d}"), "rb") as src:
                    _copy_all(src, out, part.size)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    shutil.rmtree(folder, ignore_errors=True)


class PartWriter:
    """Streams one part of a local upload to a temp file; :meth:`commit` checks its length,
    fsyncs and renames it into place with its ``.json`` (size, MD5). Used as a context
    manager: leaving it without a commit discards the temp file."""

    def __init__(self, path: str, number: int, length: int):
        self.path, self.number, self.length = path, number, length
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        self.file = open(self.tmp, "wb")
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``.

        Raises:
            UploadError: the part would exceed its length.
            StorageError: the store cannot take it (disk full, quota, read-only); the part
                is discarded.
        """
        self.size += len(chunk)
        if self.size > self.length:
            raise UploadError(f"part {self.number} is longer than its {self.length} bytes")
        self.md5.update(chunk)
        try:
            self.file.write(chunk)
        except OSError as e:  # the store's disk full, over quota, read-only
            self.discard()
            raise StorageError(f"cannot store part {self.number}: {e}; nothing of it was "
                               "kept: send it again once the store has room") from e

    def commit(self) -> Part:
        """Make the part visible (atomically).

        Raises:
            UploadError: the part is shorter than its length (the connection broke?).
            StorageError: the store cannot take it; the part is discarded.
        """
        if self.size != self.length:
            self.discard()
            raise UploadError(
                f"part {self.number} has {self.size} bytes, expected {self.length}; send it again")
        part = Part(self.number, self.size, self.md5.hexdigest())
        meta_tmp = f"{self.path}.json.tmp-{uuid.uuid4().hex}"
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            with open(meta_tmp, "w") as f:
                json.dump({"size": part.size, "etag": part.etag}, f)
            os.replace(self.tmp, self.path)
            os.replace(meta_tmp, f"{self.path}.json")
        except OSError as e:
            self.discard()
            if os.path.exists(meta_tmp):
                os.unlink(meta_tmp)
            raise StorageError(f"cannot store part {self.number}: {e}; send it again once the "
                               "store has room") from e
        return part

    def discard(self) -> None:
        """Drop the temp file (idempotent)."""
        if not self.file.closed:
            self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def _copy_all(src, dst, length: int) -> None:
    """Copy ``length`` bytes from ``src`` to ``dst`` (open files) in the kernel where it can
    (``os.copy_file_range``), else through a 1 MiB buffer."""
    left = length
    if hasattr(os, "copy_file_range"):
        try:
            while left:
                n = os.copy_file_range(src.fileno(), dst.fileno(), min(left, 1 << 30))
                if n == 0:
                    break
                left -= n
            if not left:
                return
        except OSError:
            pass  # e.g. across file systems on old kernels: fall back
        src.seek(length - left)
        dst.seek(0, os.SEEK_END)
    shutil.copyfileobj(src, dst, 1 << 20)
