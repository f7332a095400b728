"""Blob store over fsspec: one root URL (``file://``, ``s3://``, ``gs://``, ``memory://``).

Writes are atomic: data goes to a temporary key beside the target and is then moved onto it,
so a reader never sees a half-written checkpoint (local folders: ``rename``; object stores: a
PUT is atomic and the move is a server-side copy). Keys are POSIX-style relative paths that
cannot escape the root.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlencode

import fsspec
from fsspec.core import url_to_fs

from storage.errors import BlobNotFoundError, InvalidKeyError, StorageError


def check_key(key: str) -> str:
    """Validate a blob key and return it normalised.

    Raises:
        InvalidKeyError: empty, absolute, containing ``..``, a backslash or a NUL byte.
    """
    if not isinstance(key, str) or not key or key.strip() != key:
        raise InvalidKeyError(f"blob key {key!r} is empty or has surrounding spaces")
    if "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"blob key {key!r} contains a backslash or NUL byte")
    if key.startswith("/") or "://" in key:
        raise InvalidKeyError(f"blob key {key!r} must be relative to the store root")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidKeyError(f"blob key {key!r} has an empty, '.' or '..' segment")
    return posixpath.normpath(key)


class BlobStore:
    """Keys -> bytes under one fsspec root URL.

    Every method raises :class:`StorageError` (or its subclasses :class:`BlobNotFoundError`,
    :class:`InvalidKeyError`) instead of the backend's own exceptions.
    """

    def __init__(self, root_url: str, **storage_options):
        self.root_url = root_url.rstrip("/")
        try:
            self.fs, root = url_to_fs(self.root_url, **storage_options)
        except (ValueError, ImportError) as e:
            raise StorageError(f"cannot open blob store {root_url!r}: {e}") from e
        self.root = root.rstrip("/")
        self.is_local = "file" in _protocols(self.fs)
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> str:
        """Backend path of ``key`` (``/abs/dir/key`` locally, ``bucket/prefix/key`` on S3)."""
        return f"{self.root}/{check_key(key)}"

    def url(self, key: str) -> str:
        """Full URL of ``key`` (``file:///...``, ``s3://bucket/...``)."""
        return f"{self.root_url}/{check_key(key)}"

    def exists(self, key: str) -> bool:
        """True if ``key`` exists."""
        try:
            return bool(self.fs.exists(self.path(key)))
        except OSError as e:
            raise StorageError(f"cannot check {self.url(key)}: {e}") from e

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` to ``key`` atomically (temp key, then move)."""
        target = self.path(key)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        try:
            if self.is_local:
                os.makedirs(posixpath.dirname(target), exist_ok=True)
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self._move(tmp, target)
        except OSError as e:
            self._discard(tmp)
            raise StorageError(f"cannot write {self.url(key)}: {e}") from e

    def put_file(self, key: str, local_path: str | os.PathLike,
                 tags: dict[str, str] | None = None) -> None:
        """Upload the local file ``local_path`` to ``key`` atomically.

        Args:
            tags: Object tags (S3 only; ignored elsewhere), e.g.
                :data:`storage.blobs.layout.ROW_CHECKPOINT_TAG`, which bucket lifecycle rules
                select on. They travel with the object through the move onto ``key``
                (S3 copies tags by default).
        """
        target = self.path(key)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        try:
            if self.is_local:
                os.makedirs(posixpath.dirname(target), exist_ok=True)
                shutil.copyfile(local_path, tmp)
            elif tags and self.is_s3:
                self.fs.put_file(str(local_path), tmp, Tagging=urlencode(tags))
            else:
                self.fs.put_file(str(local_path), tmp)
            self._move(tmp, target)
        except OSError as e:
            self._discard(tmp)
            raise StorageError(f"cannot upload {local_path} to {self.url(key)}: {e}") from e

    def get_bytes(self, key: str) -> bytes:
        """Read all bytes of ``key``.

        Raises:
            BlobNotFoundError: ``key`` does not exist.
        """
        try:
            with self.fs.open(self.path(key), "rb") as f:
                return f.read()
        except FileNotFoundError as e:
            raise BlobNotFoundError(f"{self.url(key)} does not exist") from e
        except OSError as e:
            raise StorageError(f"cannot read {self.url(key)}: {e}") from e

    def get_file(self, key: str, local_path: str | os.PathLike) -> Path:
        """Download ``key`` to ``local_path`` (atomically: temp file, then rename).

        Raises:
            BlobNotFoundError: ``key`` does not exist.
        """
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local_path.parent, prefix=local_path.name + ".part-")
        os.close(fd)
        try:
            self.fs.get_file(self.path(key), tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; downloads are ordinary user files
            os.replace(tmp, local_path)
        except FileNotFoundError as e:
            raise BlobNotFoundError(f"{self.url(key)} does not exist") from e
        except OSError as e:
            raise StorageError(f"cannot download {self.url(key)}: {e}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return local_path

    def local_file(self, key: str, cache_dir: str | os.PathLike) -> Path:
        """A local file holding blob ``key``: the blob itself in a local store, else a copy
        downloaded once into ``{cache_dir}/blobs/{key}`` (kept for later calls).

        Raises:
            BlobNotFoundError: ``key`` does not exist.
        """
        if self.is_local:
            path = Path(self.path(key))
            if not path.exists():
                raise BlobNotFoundError(f"{self.url(key)} does not exist")
            return path
        target = Path(cache_dir) / "blobs" / key
        if not target.exists():
            self.get_file(key, target)
        return target

    def size(self, key: str) -> int:
        """Size of ``key`` in bytes.

        Raises:
            BlobNotFoundError: ``key`` does not exist.
        """
        try:
            return int(self.fs.size(self.path(key)))
        except FileNotFoundError as e:
            raise BlobNotFoundError(f"{self.url(key)} does not exist") from e

    def signed_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A presigned download URL of ``key`` valid ``expires_s`` seconds (S3, GCS), or None
        where the backend cannot sign (local folders, ``memory://``)."""
        if self.is_local:
            return None
        try:
            return self.fs.sign(self.path(key), expiration=expires_s)
        except NotImplementedError:
            return None
        except OSError as e:
            raise StorageError(f"cannot sign {self.url(key)}: {e}") from e

    @property
    def is_s3(self) -> bool:
        """True when the store is an S3 bucket (``s3://``): presigned uploads are possible."""
        return bool({"s3", "s3a"} & _protocols(self.fs))

    def s3_location(self, key: str) -> tuple[str, str]:
        """``(bucket, object key)`` of blob ``key`` on an S3 store.

        Raises:
            StorageError: the store is not S3.
        """
        if not self.is_s3:
            raise StorageError(f"{self.root_url} is not an S3 store")
        bucket, _, prefix = self.path(key).partition("/")
        return bucket, prefix

    def s3_client(self):
        """A boto3 S3 client with the store's endpoint and credentials (SigV4), created once
        per store; for what s3fs does not offer (presigned PUTs, multipart uploads).

        Raises:
            StorageError: the store is not S3.
        """
        if not self.is_s3:
            raise StorageError(f"{self.root_url} is not an S3 store")
        if getattr(self, "_s3_client", None) is None:
            import boto3
            from botocore.config import Config

            kwargs = dict(self.fs.client_kwargs or {})
            if getattr(self.fs, "endpoint_url", None):
                kwargs.setdefault("endpoint_url", self.fs.endpoint_url)
            if self.fs.key:
                kwargs.update(aws_access_key_id=self.fs.key,
                              aws_secret_access_key=self.fs.secret,
                              aws_session_token=self.fs.token)
            self._s3_client = boto3.client(
                "s3", config=Config(signature_version="s3v4"), **kwargs
            )
        return self._s3_client

    def presign_put(self, key: str, expires_s: int = 3600) -> str:
        """A presigned ``PUT`` URL writing blob ``key`` directly to S3, valid ``expires_s`` s.

        Raises:
            StorageError: the store is not S3, or signing failed.
        """
        bucket, object_key = self.s3_location(key)
        return self.presign("put_object", {"Bucket": bucket, "Key": object_key}, expires_s)

    def presign(self, operation: str, params: dict, expires_s: int) -> str:
        """A presigned URL of the S3 API call ``operation`` (e.g. ``upload_part``) with
        ``params``, valid ``expires_s`` seconds.

        Raises:
            StorageError: the store is not S3, or signing failed.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.s3_client().generate_presigned_url(
                operation, Params=params, ExpiresIn=expires_s
            )
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot presign {operation} on {self.root_url}: {e}") from e

    def open_read(self, key: str, block_size: int | None = None):
        """A binary file object reading ``key`` (the caller closes it).

        Args:
            block_size: Bytes fetched per read from a remote store (fsspec's default, 5 MiB
                for S3, when None); a reader that seeks about a large file, as a TIFF
                structure's reader does, wants a small one.

        Raises:
            BlobNotFoundError: ``key`` does not exist.
        """
        try:
            if block_size is not None:
                return self.fs.open(self.path(key), "rb", block_size=block_size)
            return self.fs.open(self.path(key), "rb")
        except FileNotFoundError as e:
            raise BlobNotFoundError(f"{self.url(key)} does not exist") from e
        except OSError as e:
            raise StorageError(f"cannot read {self.url(key)}: {e}") from e

    def list(self, prefix: str) -> list[str]:
        """Keys under the folder ``prefix``, sorted; temp keys of unfinished writes excluded."""
        base = self.path(prefix)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        keys = [p[len(self.root) + 1 :] for p in (f.rstrip("/") for f in found)]
        return sorted(k for k in keys if ".tmp-" not in posixpath.basename(k))

    def delete(self, key: str) -> None:
        """Delete ``key`` if it exists."""
        self._discard(self.path(key))

    def usage(self, prefix: str) -> tuple[int, int]:
        """``(objects, bytes)`` stored under the folder ``prefix`` (temp keys included).

        Raises:
            StorageError: the store cannot be listed.
        """
        return _count(self._files(prefix))

    def _files(self, prefix: str) -> dict[str, dict]:
        """Backend path -> fsspec info of every file under the folder ``prefix``."""
        try:
            found = self.fs.find(self.path(prefix), detail=True)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise StorageError(f"cannot list {self.url(prefix)}: {e}") from e
        return {p: info for p, info in found.items() if info.get("type") != "directory"}

    def delete_prefix(self, prefix: str) -> tuple[int, int]:
        """Delete every key under the folder ``prefix`` (temp keys of unfinished writes
        included) and the folder itself; idempotent.

        Returns:
            ``(objects, bytes)`` deleted (``(0, 0)`` when nothing was there).

        Raises:
            StorageError: the store refused or failed a deletion (what was deleted before
                stays deleted; calling it again deletes the rest).
        """
        base = self.path(prefix)
        files = self._files(prefix)
        try:
            if files:
                self.fs.rm(sorted(files))
            if self.is_local and Path(base).is_dir():
                shutil.rmtree(base)  # the emptied folders
        except FileNotFoundError:
            pass  # a concurrent deletion got there first
        except OSError as e:
            raise StorageError(f"cannot delete under {self.url(prefix)}: {e}") from e
        return _count(files)

    def _move(self, src: str, dst: str) -> None:
        if self.is_local:
            os.replace(src, dst)
        else:
            self.fs.mv(src, dst)

    def _discard(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except OSError:
            pass


def _count(files: dict[str, dict]) -> tuple[int, int]:
    """``(objects, bytes)`` of :meth:`BlobStore._files`' answer."""
    return len(files), sum(int(info.get("size") or 0) for info in files.values())


def _protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    proto = fs.protocol
    return set(proto) if isinstance(proto, (tuple, list)) else {proto}
