"""The HTTP API: ``create_app(settings)`` builds the FastAPI application.

Run it with ``pelletseg serve`` (uvicorn). It never imports torch or ``worker``: it reads and
writes the job table, reads the blob store, and sends tasks by name.
"""

from __future__ import annotations

import re

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import check_auth_binding, require_api_key
from api.deps import Services
from api.routes import batches, dashboard, health, jobs, metrics, models, rows, uploads, viewer
from api.schemas import ErrorOut
from core.settings import Settings, get_settings
from core.spec import SpecError
from storage.errors import (
    BlobNotFoundError,
    InvalidKeyError,
    NotFoundError,
    StorageError,
    TransitionError,
    UploadError,
    UploadStateError,
)
from submission import SubmissionError

__all__ = ["ERROR_STATUS", "BodyLimit", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from ``PELLETSEG_*`` variables).

    The job table must already be migrated (``pelletseg serve`` and ``pelletseg migrate`` do
    it).

    Raises:
        AuthConfigError: authentication is off while ``settings.api_host`` is not loopback.
    """
    settings = settings or get_settings()
    check_auth_binding(settings)
    app = FastAPI(
        title="pelletseg",
        version="1",
        summary="Phase segmentation of gigapixel iron ore pellet micrographs.",
        description="Submit a pellet image, follow its tile rows, download the label map, "
        "overlay and phase fractions. Every /v1 route needs `Authorization: Bearer <API key>`.",
    )
    app.state.settings = settings
    app.state.services = Services(settings)

    errors = {code: {"model": ErrorOut} for code in (401, 403)}
    protected = [Depends(require_api_key)]
    app.include_router(jobs.router, prefix="/v1", dependencies=protected, responses=errors)
    app.include_router(models.router, prefix="/v1", dependencies=protected, responses=errors)
    app.include_router(health.router)
    app.include_router(rows.router, prefix="/v1", dependencies=protected, responses=errors)
    app.include_router(viewer.router, prefix="/v1", dependencies=protected, responses=errors)
    dashboard.install(app, app.state.services.blobs)
    app.include_router(uploads.router, prefix="/v1", dependencies=protected, responses=errors)
    app.include_router(batches.router, prefix="/v1", dependencies=protected, responses=errors)
    app.include_router(metrics.router)

    app.add_exception_handler(StorageError, _domain_error)
    app.add_exception_handler(SubmissionError, _domain_error)
    app.add_exception_handler(SpecError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, unlimited=UPLOAD_PART_PATH)
    return app


#: Storage and submission errors -> HTTP status (first match wins: subclasses first).
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (BlobNotFoundError, 404),
    (NotFoundError, 404),
    (TransitionError, 409),
    (UploadStateError, 409),
    (UploadError, 422),
    (InvalidKeyError, 400),
    (SpecError, 422),
    (SubmissionError, 422),
    (StorageError, 503),
)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    """The one mapping of ``storage`` and submission errors to HTTP responses."""
    code = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
    detail = str(exc)
    if code == 503:
        detail = f"a backing service failed: {exc}"
    return JSONResponse({"detail": detail}, status_code=code)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Unexpected errors: 500 with the error schema (the traceback goes to the server log)."""
    return JSONResponse({"detail": "internal server error; see the server log"}, status_code=500)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Request validation errors as one ``{"detail": str}`` sentence (422)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return JSONResponse({"detail": "invalid request: " + "; ".join(parts)}, status_code=422)


#: Upload parts stream to disk; their route checks each part's own length instead.
UPLOAD_PART_PATH = re.compile(r"/v1/uploads/[^/]+/parts/\d+")


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, declared
    (``Content-Length``) or streamed (chunked: the body is buffered up to the limit). Paths
    matching ``unlimited`` (upload parts) pass untouched."""

    def __init__(self, app: ASGIApp, max_bytes: int, unlimited: re.Pattern | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.unlimited = unlimited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.unlimited is not None and self.unlimited.fullmatch(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await self._reject(scope, receive, send, 400, "invalid Content-Length header")
                return
            if too_big:
                await self._reject_size(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length: read the (chunked) body here, up to the limit, then replay it.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject_size(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject_size(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body is larger than {self.max_bytes} bytes"
        await self._reject(scope, receive, send, 413, detail)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, code: int, detail: str) -> None:
        await JSONResponse({"detail": detail}, status_code=code)(scope, receive, send)
