"""The dashboard: static HTML/JS/CSS pages at ``/`` (jobs) and ``/jobs/{id}`` (one job).

The pages hold no data and need no key: their scripts read everything from ``/v1`` with
the API key the user enters once (kept in the browser's localStorage and sent as
``Authorization: Bearer KEY``). Files are served from ``api/static/`` under ``/static``
(StaticFiles: ETag and Last-Modified revalidation). Pages are sent with a strict
Content-Security-Policy (scripts and styles only from this origin; connections to it and, for
an S3 store, to the S3 endpoint the submit panel PUTs upload parts to), since a script
injected into them could read the stored key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.blobs import BlobStore
from storage.errors import StorageError

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
#: The one inline <style> OpenSeadragon 6.1.1 injects (a touch-screen focus rule), allowed by
#: its hash and nothing else; recompute it when the vendored viewer is updated.
OSD_STYLE_HASH = "'sha256-9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE='"


def security_headers(upload_origins: Sequence[str] = ()) -> dict[str, str]:
    """The headers of every dashboard page and static file: a Content-Security-Policy with
    images also from blob: (tiles and the preview are fetched with the key, then shown) and
    connections to this origin and ``upload_origins`` (where the submit panel PUTs upload
    parts: the S3 endpoint of presigned part URLs), nothing else."""
    connect = " ".join(["'self'", *upload_origins])
    policy = (
        f"default-src 'self'; script-src 'self'; style-src 'self' {OSD_STYLE_HASH}; "
        f"img-src 'self' blob: data:; connect-src {connect}; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",  # revalidate: files change with each release (ETags)
    }


def upload_origins(blobs: BlobStore) -> list[str]:
    """Origins besides the API's that the dashboard PUTs upload parts to: the S3 endpoint
    of presigned URLs (one signed here, offline) for an S3 store; none for a local store (parts
    go to ``PUT /v1/uploads/{id}/parts/{n}``) or when signing fails (the dashboard's uploads
    are then refused by the browser; ``pelletseg submit`` still works)."""
    if not blobs.is_s3:
        return []
    try:
        url = urlsplit(blobs.presign_put("uploads/dashboard-origin-probe", 60))
    except StorageError:
        return []
    return [f"{url.scheme}://{url.netloc}"]


router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8",
                        headers=request.app.state.dashboard_headers)


@router.get("/")
def jobs_page(request: Request):
    """The jobs table."""
    return _page(request, "index.html")


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str):
    """One job (the page reads the id from its URL)."""
    return _page(request, "job.html")


class _StaticHeaders:
    """ASGI wrapper adding the pages' :func:`security_headers` to static files."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]):
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.headers
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI, blobs: BlobStore) -> None:
    """Add the dashboard pages and ``/static`` to ``app`` (no authentication: no data), with
    :func:`security_headers` that let the pages upload into ``blobs``."""
    headers = security_headers(upload_origins(blobs))
    app.state.dashboard_headers = headers
    app.include_router(router)
    app.mount("/static", _StaticHeaders(StaticFiles(directory=STATIC_DIR), headers),
              name="static")
