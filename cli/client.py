"""A small client of pelletseg's HTTP API (httpx), used by ``pelletseg submit``, ``jobs``,
``status``, ``watch``, ``cancel``, ``results`` and ``resume --api``.

The API URL and key come from ``--api`` / ``PELLETSEG_API_URL`` and ``--api-key`` /
``PELLETSEG_API_KEY``. Presigned storage URLs (S3) are called without the API key; URLs on
the API itself (local-store uploads, downloads) with it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from cli.options import DEFAULT_API_URL, api_options  # noqa: F401  (api_options: old home)

CHUNK = 1 << 20


#: What to do when the API refuses the key (401 none or unknown, 403 revoked).
KEY_HINT = ("pass --api-key KEY or set PELLETSEG_API_KEY; a key comes from "
            "`pelletseg apikey create NAME` run against the API's stack")


class ClientError(Exception):
    """The API (or storage) refused a request or cannot be reached.

    Attributes:
        status: The HTTP status, or None when no answer came (connection error).
        retryable: True when sending the same request again may succeed (5xx, 408, 429,
            connection errors, a presigned URL that expired).
    """

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ApiClient:
    """Calls of the pelletseg API (``/v1``). Every method raises :class:`ClientError` with the
    API's ``detail`` on an error answer.

    Args:
        base_url: The API's base URL (``http://host:8000``).
        api_key: Sent as ``Authorization: Bearer`` to the API (never to presigned URLs).
        transport, storage_transport: httpx transports (tests inject failures with them).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None,
                 storage_transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeouts = httpx.Timeout(timeout, write=600.0, read=600.0)
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeouts,
                                 transport=transport)
        self.storage = httpx.Client(timeout=timeouts, transport=storage_transport)

    def close(self) -> None:
        self.http.close()
        self.storage.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- plumbing
    def _route(self, url: str) -> tuple[httpx.Client, str]:
        """``(client, url)``: the API client (sending the key, with the API's scheme) for a
        path or a URL on the API's host and port, else the bare storage client."""
        parts, base = urlsplit(url), urlsplit(self.base_url)
        if not parts.netloc:
            return self.http, url
        if parts.netloc == base.netloc:
            return self.http, urlunsplit((base.scheme, *parts[1:]))
        return self.storage, url

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        """One request; error answers and connection failures become :class:`ClientError`."""
        client, url = self._route(url)
        try:
            response = client.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            if client is self.http:
                raise ClientError(f"no API at {self.base_url} ({type(e).__name__}: {e}): start "
                                  "`pelletseg serve` or pass --api URL (env PELLETSEG_API_URL)",
                                  retryable=True) from e
            raise ClientError(f"cannot reach storage: {type(e).__name__}: {e}",
                              retryable=True) from e
        if response.status_code >= 400:
            error = error_of(response)
            if client is self.http and response.status_code in (401, 403):
                error = ClientError(f"{error}; {KEY_HINT}", status=error.status)
            raise error
        return response

    def json(self, method: str, path: str, **kwargs):
        return self.request(method, path, **kwargs).json()

    # ---------------------------------------------------------------- jobs
    def submit(self, body: dict) -> dict:
        return self.json("POST", "/v1/jobs", json=body)

    def submit_batch(self, body: dict) -> dict:
        return self.json("POST", "/v1/batches", json=body)

    def batch(self, batch_id: str) -> dict:
        """A batch: its jobs and their counts by status (``GET /v1/batches/{id}``)."""
        return self.json("GET", f"/v1/batches/{batch_id}")

    def batch_results_csv(self, batch_id: str) -> str:
        """The batch's table of sections (``GET /v1/batches/{id}/results.csv``), CSV text."""
        return self.request("GET", f"/v1/batches/{batch_id}/results.csv").text

    def jobs(self, **params) -> dict:
        return self.json("GET", "/v1/jobs", params={k: v for k, v in params.items()
                                                   if v not in (None, [], ())})

    def job(self, job_id: str) -> dict:
        return self.json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self.json("POST", f"/v1/jobs/{job_id}/cancel")

    def resume(self, job_id: str) -> dict:
        return self.json("POST", f"/v1/jobs/{job_id}/resume")

    def delete(self, job_id: str) -> dict:
        """Delete an ended job's stored objects (``DELETE /v1/jobs/{id}``)."""
        return self.json("DELETE", f"/v1/jobs/{job_id}")

    def delete_batch(self, batch_id: str) -> dict:
        """Delete a batch's ended jobs (``DELETE /v1/batches/{id}``)."""
        return self.json("DELETE", f"/v1/batches/{batch_id}")

    def rerun(self, job_id: str, body: dict) -> dict:
        """A new job on an earlier job's image (``POST /v1/jobs/{id}/rerun``)."""
        return self.json("POST", f"/v1/jobs/{job_id}/rerun", json=body)

    def rerun_batch(self, batch_id: str, body: dict) -> dict:
        """A new batch on a batch's images (``POST /v1/batches/{id}/rerun``)."""
        return self.json("POST", f"/v1/batches/{batch_id}/rerun", json=body)

    def cancel_batch(self, batch_id: str) -> dict:
        """Cancel a batch's jobs that have not ended (``POST /v1/batches/{id}/cancel``)."""
        return self.json("POST", f"/v1/batches/{batch_id}/cancel")

    def resume_batch(self, batch_id: str) -> dict:
        """Resume a batch's failed and interrupted jobs (``POST /v1/batches/{id}/resume``)."""
        return self.json("POST", f"/v1/batches/{batch_id}/resume")

    def results(self, job_id: str) -> dict:
        return self.json("GET", f"/v1/jobs/{job_id}/results")

    def microstructure(self, job_id: str) -> dict | None:
        """The job's microstructure.json, or None when it has none (404)."""
        try:
            return self.json("GET", f"/v1/jobs/{job_id}/microstructure")
        except ClientError as e:
            if e.status == 404:
                return None
            raise

    def download(self, url: str, dest: Path, advance: Callable[[int], object] | None = None,
                 ) -> Path:
        """Stream ``url`` to ``dest`` (temp file, then rename)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        client, url = self._route(url)
        try:
            with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(response)
                with open(tmp, "wb") as f:
                    for block in response.iter_bytes(CHUNK):
                        f.write(block)
                        if advance:
                            advance(len(block))
            os.replace(tmp, dest)
        except httpx.HTTPError as e:
            raise ClientError(f"download of {url} failed: {e}", retryable=True) from e
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    # ---------------------------------------------------------------- uploads
    def create_upload(self, filename: str, size: int, part_size: int | None = None) -> dict:
        body = {"filename": filename, "size": size}
        if part_size:
            body["part_size"] = part_size
        return self.json("POST", "/v1/uploads", json=body)

    def upload(self, upload_id: str) -> dict:
        return self.json("GET", f"/v1/uploads/{upload_id}")

    def upload_urls(self, upload_id: str, parts: list[int]) -> dict[int, str]:
        reply = self.json("POST", f"/v1/uploads/{upload_id}/urls", json={"parts": parts})
        return {int(k): v for k, v in reply["urls"].items()}

    def complete_upload(self, upload_id: str) -> dict:
        return self.json("POST", f"/v1/uploads/{upload_id}/complete")

    def abort_upload(self, upload_id: str) -> None:
        self.request("DELETE", f"/v1/uploads/{upload_id}")

    def put_part(self, url: str, path: Path, offset: int, length: int,
                 advance: Callable[[int], object] | None = None) -> str:
        """PUT bytes ``[offset, offset + length)`` of ``path`` to ``url``, streamed in 1 MiB
        chunks, and check the answer's ETag against their MD5.

        Returns:
            The part's hex MD5.

        Raises:
            ClientError: refused, unreachable, or the ETag differs (retryable).
        """
        md5 = hashlib.md5(usedforsecurity=False)

        def body() -> Iterator[bytes]:
            with open(path, "rb") as f:
                f.seek(offset)
                left = length
                while left:
                    block = f.read(min(CHUNK, left))
                    if not block:
                        raise ClientError(f"{path} shrank while uploading")
                    left -= len(block)
                    md5.update(block)
                    if advance:
                        advance(len(block))
                    yield block

        response = self.request("PUT", url, content=body(),
                                headers={"Content-Length": str(length)})
        etag = response.headers.get("etag", "").strip('"')
        if etag and etag != md5.hexdigest():
            raise ClientError(f"part at offset {offset} of {path} arrived altered (ETag {etag}, "
                              f"MD5 {md5.hexdigest()})", retryable=True)
        return md5.hexdigest()


def error_of(response: httpx.Response) -> ClientError:
    """A :class:`ClientError` from an error answer: the API's ``detail``, or S3's XML message."""
    try:
        detail = response.json().get("detail") or response.text
    except ValueError:
        detail = response.text[:300] or response.reason_phrase
    code = response.status_code
    expired = code == 403 and "expired" in response.text.lower()
    retryable = code >= 500 or code in (408, 429) or expired
    return ClientError(f"HTTP {code}: {detail}", status=code, retryable=retryable)
