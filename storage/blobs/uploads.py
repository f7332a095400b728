"""Uploads of (multi-GB) images into the blob store, in parts, resumable.

An upload ``U`` of file ``NAME`` ends as the blob ``uploads/U/NAME`` (:func:`storage.blobs.layout.
upload_key`); a job then reads it like any other source. Its state needs no table:

- ``uploads/U/.manifest.json``: name, size, part size and count, backend, S3 upload id,
  completion time (written atomically by the API; the only mutable record).
- ``uploads/U/.deleting``: present while the upload is being deleted
  (:func:`storage.deletion.delete_upload` writes it before it looks for jobs that read the
  upload); a job submitted from a marked upload is refused (:meth:`UploadStore.deleting`).
- **S3 store**: the parts go straight to S3 through presigned URLs. More than one part: an S3
  multipart upload (S3 keeps which parts arrived: ``ListParts``), completed by
  ``CompleteMultipartUpload``; one part: a presigned ``PutObject``. Part ETags are the MD5 of
  each part, so a client checks what S3 received.
- **local store** (``file://``): each part is PUT to the API, streamed to
  ``uploads/U/.parts/NNNNN`` (temp file, fsync, rename: a part is there whole or not at all)
  with ``NNNNN.json`` (size, MD5) beside it; completion concatenates the parts in the kernel
  (``copy_file_range``) into the final blob and removes them (:mod:`storage.blobs.upload_parts`).
  Nothing is held in memory.

A broken connection costs at most the part in flight: :meth:`UploadStore.list_parts` tells a
client which parts arrived, and it sends only the others.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ValidationError

from storage.blobs.layout import upload_key
from storage.blobs.store import BlobStore
from storage.blobs.upload_parts import Part, PartWriter, assemble, list_parts
from storage.errors import (
    BlobNotFoundError,
    NotFoundError,
    StorageError,
    UploadError,
    UploadStateError,
)
from storage.jobtable.tables import utcnow

MANIFEST = ".manifest.json"
PARTS_DIR = ".parts"
DELETING = ".deleting"
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum size of every part but the last
MAX_PARTS = 10_000  # S3's limit
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadManifest(BaseModel):
    """What ``uploads/{id}/.manifest.json`` records about one upload.

    Attributes:
        id: The upload id (UUID).
        filename: The client's file name, as given.
        key: Blob key of the finished file (``uploads/{id}/{safe name}``).
        size: File size (bytes).
        part_size: Size of every part but the last (bytes).
        parts: Number of parts (1..10,000).
        backend: ``s3`` (presigned URLs) or ``local`` (parts PUT to the API).
        s3_upload_id: The S3 multipart upload id (S3 with more than one part), else None.
        created_at, completed_at: UTC times; ``completed_at`` None until complete.
    """

    id: str
    filename: str
    key: str
    size: int
    part_size: int
    parts: int
    backend: Literal["s3", "local"]
    s3_upload_id: str | None = None
    created_at: datetime
    completed_at: datetime | None = None

    def part_length(self, number: int) -> int:
        """Length of part ``number`` (1-based, bytes): ``part_size``, less for the last.

        Raises:
            UploadError: ``number`` is not in 1..parts.
        """
        if not 1 <= number <= self.parts:
            raise UploadError(
                f"upload {self.id} has parts 1..{self.parts}; there is no part {number}"
            )
        return min(self.part_size, self.size - (number - 1) * self.part_size)


def safe_filename(name: str) -> str:
    """The blob-safe version of a client's file name: its last path segment, characters other
    than ``A-Z a-z 0-9 . _ -`` replaced by ``_``, no leading dots, at most 200 characters.

    Raises:
        UploadError: nothing usable is left (e.g. ``""`` or ``".."``).
    """
    base = re.split(r"[\\/]", name)[-1]
    safe = _SAFE_NAME.sub("_", base).lstrip(".")[-200:]
    if not safe.strip("_"):
        raise UploadError(f"file name {name!r} has no usable characters; name the file")
    return safe


def plan_parts(size: int, part_size: int) -> tuple[int, int]:
    """``(part_size, parts)`` for a file of ``size`` bytes: the requested part size, raised to
    a whole MiB where 10,000 parts would not hold the file."""
    if size > part_size * MAX_PARTS:
        mib = 1024 * 1024
        part_size = math.ceil(size / MAX_PARTS / mib) * mib
    return part_size, max(1, math.ceil(size / part_size))


class UploadStore:
    """Uploads in one blob store (``file://`` or ``s3://``).

    Raises (every method): :class:`NotFoundError` for an unknown upload id,
    :class:`UploadError` for invalid input, :class:`UploadStateError` when the upload is not
    in the needed state, :class:`StorageError` when the store fails.
    """

    def __init__(self, blobs: BlobStore, *, part_size: int, max_bytes: int):
        self.blobs = blobs
        self.part_size = part_size
        self.max_bytes = max_bytes
        self.backend: Literal["s3", "local"] | None = (
            "s3" if blobs.is_s3 else "local" if blobs.is_local else None
        )

    # ---------------------------------------------------------------- create / read
    def create(self, filename: str, size: int, part_size: int | None = None) -> UploadManifest:
        """Start an upload of ``size`` bytes named ``filename`` (S3: creates the multipart
        upload when there is more than one part).

        Raises:
            UploadError: the store cannot take uploads, the size is out of range or the part
                size is below 5 MiB.
        """
        if self.backend is None:
            raise UploadError(f"uploads need a file:// or s3:// store, not {self.blobs.root_url}")
        if not 1 <= size <= self.max_bytes:
            raise UploadError(
                f"size must be 1..{self.max_bytes} bytes (PELLETSEG_MAX_UPLOAD_BYTES), got {size}"
            )
        requested = part_size or self.part_size
        if requested < MIN_PART_BYTES:
            raise UploadError(f"part_size must be at least {MIN_PART_BYTES} bytes (5 MiB)")
        part_size, parts = plan_parts(size, requested)
        upload_id = str(uuid.uuid4())
        manifest = UploadManifest(
            id=upload_id, filename=filename, key=upload_key(upload_id, safe_filename(filename)),
            size=size, part_size=part_size, parts=parts, backend=self.backend,
            created_at=utcnow(),
        )
        if self.backend == "s3" and parts > 1:
            bucket, key = self.blobs.s3_location(manifest.key)
            reply = self._s3("create_multipart_upload", Bucket=bucket, Key=key)
            manifest = manifest.model_copy(update={"s3_upload_id": reply["UploadId"]})
        self._save(manifest)
        return manifest

    def get(self, upload_id: str) -> UploadManifest:
        """The manifest of upload ``upload_id``.

        Raises:
            NotFoundError: no such upload (or it was aborted).
        """
        try:
            uuid.UUID(upload_id)
            data = self.blobs.get_bytes(self._key(upload_id, MANIFEST))
            return UploadManifest.model_validate_json(data)
        except (ValueError, BlobNotFoundError) as e:
            raise NotFoundError(f"upload {upload_id} does not exist") from e
        except ValidationError as e:
            raise StorageError(f"manifest of upload {upload_id} is corrupt: {e}") from e

    def ids(self) -> list[str]:
        """Ids of the uploads in the store, finished or not, sorted: the folders under
        ``uploads/`` named by a UUID (what :meth:`get` may read).

        Raises:
            StorageError: the store cannot be listed.
        """
        folder = self.blobs.path("uploads")
        try:
            self.blobs.fs.invalidate_cache(folder)
            found = self.blobs.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"cannot list {self.blobs.url('uploads')}: {e}") from e
        ids = []
        for path in found:
            name = path.rstrip("/").rsplit("/", 1)[-1]
            try:
                uuid.UUID(name)
            except ValueError:
                continue
            ids.append(name)
        return sorted(ids)

    def list_parts(self, manifest: UploadManifest) -> list[Part]:
        """The parts that arrived, by number (a completed upload: all of them)."""
        if manifest.completed_at is not None:
            return [Part(n, manifest.part_length(n), "") for n in range(1, manifest.parts + 1)]
        if manifest.backend == "local":
            return self._local_parts(manifest)
        bucket, key = self.blobs.s3_location(manifest.key)
        if manifest.s3_upload_id is None:
            head = self._head(bucket, key)
            return [] if head is None else [
                Part(1, head["ContentLength"], head["ETag"].strip('"'))]
        parts = []
        pages = self.blobs.s3_client().get_paginator("list_parts").paginate(
            Bucket=bucket, Key=key, UploadId=manifest.s3_upload_id)
        try:
            for page in pages:
                parts += [Part(p["PartNumber"], p["Size"], p["ETag"].strip('"'))
                          for p in page.get("Parts", [])]
        except Exception as e:  # botocore's ClientError and connection errors
            raise self._s3_error("list_parts", e) from e
        return sorted(parts, key=lambda p: p.number)

    def part_urls(self, manifest: UploadManifest, numbers: list[int], expires_s: int) -> dict:
        """Presigned S3 ``PUT`` URLs of parts ``numbers``, valid ``expires_s`` seconds.

        Raises:
            UploadStateError: the upload is complete, or local (its parts go to the API).
        """
        self._check_open(manifest)
        if manifest.backend != "s3":
            raise UploadStateError(f"upload {manifest.id} is local: PUT its parts to the API")
        bucket, key = self.blobs.s3_location(manifest.key)
        urls = {}
        for n in numbers:
            manifest.part_length(n)
            if manifest.s3_upload_id is None:
                urls[n] = self.blobs.presign_put(manifest.key, expires_s)
            else:
                urls[n] = self.blobs.presign("upload_part", {
                    "Bucket": bucket, "Key": key, "UploadId": manifest.s3_upload_id,
                    "PartNumber": n}, expires_s)
        return urls

    # ---------------------------------------------------------------- local parts
    def open_part(self, manifest: UploadManifest, number: int) -> PartWriter:
        """A writer streaming part ``number`` of a local upload to disk.

        Raises:
            UploadStateError: the upload is complete, or on S3 (parts go to presigned URLs).
            UploadError: no such part number.
        """
        self._check_open(manifest)
        if manifest.backend != "local":
            raise UploadStateError(
                f"upload {manifest.id} goes to S3: PUT its parts to the presigned URLs from "
                f"POST /v1/uploads/{manifest.id}/urls")
        length = manifest.part_length(number)
        return PartWriter(self.blobs.path(self._key(manifest.id, PARTS_DIR, f"{number:05d}")),
                          number, length)

    def _local_parts(self, manifest: UploadManifest) -> list[Part]:
        return list_parts(self.blobs.path(self._key(manifest.id, PARTS_DIR)))

    # ---------------------------------------------------------------- complete / abort
    def complete(self, manifest: UploadManifest) -> UploadManifest:
        """Join the parts into ``manifest.key``; idempotent (a completed upload is returned).

        Raises:
            UploadStateError: parts are missing or have the wrong size (named in the message).
        """
        if manifest.completed_at is not None:
            return manifest
        if manifest.backend == "local":
            self._complete_local(manifest)
        else:
            self._complete_s3(manifest)
        manifest = manifest.model_copy(update={"completed_at": utcnow()})
        self._save(manifest)
        return manifest

    def _check_parts(self, manifest: UploadManifest, parts: list[Part]) -> None:
        have = {p.number: p for p in parts}
        missing = [n for n in range(1, manifest.parts + 1) if n not in have]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise UploadStateError(
                f"upload {manifest.id} is missing {len(missing)} of {manifest.parts} parts "
                f"({shown}); upload them, then complete again")
        for n, part in have.items():
            if part.size != manifest.part_length(n):
                raise UploadStateError(
                    f"part {n} of upload {manifest.id} has {part.size} bytes, expected "
                    f"{manifest.part_length(n)}; upload it again")

    def _complete_local(self, manifest: UploadManifest) -> None:
        final = self.blobs.path(manifest.key)
        if os.path.exists(final) and os.path.getsize(final) == manifest.size:
            return  # a concurrent complete got there first
        parts = self._local_parts(manifest)
        self._check_parts(manifest, parts)
        try:
            assemble(self.blobs.path(self._key(manifest.id, PARTS_DIR)), parts, final)
        except OSError as e:
            raise StorageError(f"cannot assemble upload {manifest.id}: {e}") from e

    def _complete_s3(self, manifest: UploadManifest) -> None:
        bucket, key = self.blobs.s3_location(manifest.key)
        head = self._head(bucket, key)
        if head is not None and head["ContentLength"] == manifest.size:
            return  # single PUT done, or a concurrent complete got there first
        parts = self.list_parts(manifest)
        self._check_parts(manifest, parts)
        if manifest.s3_upload_id is not None:
            self._s3("complete_multipart_upload", Bucket=bucket, Key=key,
                     UploadId=manifest.s3_upload_id,
                     MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'}
                                                for p in parts]})
        head = self._head(bucket, key)
        if head is None or head["ContentLength"] != manifest.size:
            raise UploadStateError(f"upload {manifest.id} did not produce {manifest.size} bytes")

    def abort(self, manifest: UploadManifest) -> None:
        """Delete an upload: its parts, its file (also when complete) and its manifest.
        Jobs that already read the file keep their outputs."""
        if manifest.backend == "s3" and manifest.s3_upload_id and manifest.completed_at is None:
            bucket, key = self.blobs.s3_location(manifest.key)
            try:
                self._s3("abort_multipart_upload", Bucket=bucket, Key=key,
                         UploadId=manifest.s3_upload_id)
            except NotFoundError:
                pass
        folder = self.blobs.path(self._key(manifest.id))
        try:
            self.blobs.fs.invalidate_cache(folder)  # parts PUT through presigned URLs
            if self.blobs.fs.exists(folder):
                self.blobs.fs.rm(folder, recursive=True)
        except OSError as e:
            raise StorageError(f"cannot delete upload {manifest.id}: {e}") from e

    def mark_deleting(self, upload_id: str) -> None:
        """Write the upload's deletion mark (``uploads/{id}/.deleting``, the time in UTC): the
        first step of deleting it. Jobs submitted from it from now on are refused.

        Raises:
            StorageError: the store failed.
        """
        self.blobs.put_bytes(self._key(upload_id, DELETING), utcnow().isoformat().encode())

    def unmark_deleting(self, upload_id: str) -> None:
        """Remove the deletion mark (a deletion that was refused); absent: nothing to do."""
        self.blobs.delete(self._key(upload_id, DELETING))

    def deleting(self, upload_id: str) -> bool:
        """Whether the upload carries the deletion mark or is gone (no manifest): a job must
        not be submitted from it. Read from the store itself (another process may have
        written the mark), not from a listing cached here.

        Raises:
            StorageError: the store failed.
        """
        self.blobs.fs.invalidate_cache(self.blobs.path(self._key(upload_id)))
        return (self.blobs.exists(self._key(upload_id, DELETING))
                or not self.blobs.exists(self._key(upload_id, MANIFEST)))

    def id_of(self, source_url: str) -> str | None:
        """The upload id in a job's ``source_url`` (:meth:`key_of`), or None for a source
        outside the store's ``uploads/`` or in a folder there not named by an upload id."""
        key = self.key_of(source_url)
        if key is None:
            return None
        try:
            return str(uuid.UUID(key.split("/")[1]))
        except ValueError:
            return None

    def source_url(self, manifest: UploadManifest) -> str:
        """URL of the finished file, for a job's ``source_url``.

        Raises:
            UploadStateError: the upload is not complete.
        """
        if manifest.completed_at is None:
            raise UploadStateError(
                f"upload {manifest.id} is not complete: POST /v1/uploads/{manifest.id}/complete "
                "once every part is uploaded")
        return self.blobs.url(manifest.key)

    def key_of(self, source_url: str) -> str | None:
        """The blob key of the upload file a job's ``source_url`` names (the inverse of
        :meth:`source_url`: ``uploads/{id}/{name}``), or None for a source outside the
        store's ``uploads/``."""
        prefix = self.blobs.url("uploads") + "/"
        return "uploads/" + source_url[len(prefix):] if source_url.startswith(prefix) else None

    # ---------------------------------------------------------------- plumbing
    @staticmethod
    def _key(upload_id: str, *names: str) -> str:
        return "/".join(("uploads", upload_id, *names))

    def _save(self, manifest: UploadManifest) -> None:
        self.blobs.put_bytes(self._key(manifest.id, MANIFEST),
                             manifest.model_dump_json(indent=1).encode())

    @staticmethod
    def _check_open(manifest: UploadManifest) -> None:
        if manifest.completed_at is not None:
            raise UploadStateError(f"upload {manifest.id} is already complete")

    def _head(self, bucket: str, key: str) -> dict | None:
        try:
            return self._s3("head_object", Bucket=bucket, Key=key)
        except NotFoundError:
            return None

    def _s3(self, operation: str, **params) -> dict:
        try:
            return getattr(self.blobs.s3_client(), operation)(**params)
        except Exception as e:  # botocore's ClientError and connection errors
            raise self._s3_error(operation, e) from e

    @staticmethod
    def _s3_error(operation: str, e: Exception) -> StorageError:
        code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchUpload", "NotFound"):
            return NotFoundError(f"S3 {operation}: {code}")
        return StorageError(f"S3 {operation} failed: {e}")
