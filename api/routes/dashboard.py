"""The dashboard: static HTML/JS/CSS pages at ``/`` (jobs) and ``/jobs/{id}`` (one job).

The pages hold no data and need no key: their scripts read everything from ``/v1`` with
the API key the user enters once (kept in the browser's localStorage and sent as
``Authorization: Bearer KEY``). Files are served from ``api/static/`` under ``/static``
(StaticFiles: ETag and Last-Modified revalidation). Pages are sent with a strict
Content-Security-Policy (scripts, styles and connections only from this origin), since a
script injected into them could read the stored key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
#: The one inline <style> OpenSeadragon 6.1.1 injects (a touch-screen focus rule), allowed by
#: its hash and nothing else; recompute it when the vendored viewer is updated.
OSD_STYLE_HASH = "'sha256-9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE='"
#: Images also from blob: (tiles and the preview are fetched with the key, then shown).
CONTENT_SECURITY_POLICY = (
    f"default-src 'self'; script-src 'self'; style-src 'self' {OSD_STYLE_HASH}; "
    "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/")
def jobs_page():
    """The jobs table."""
    return _page("index.html")


@router.get("/jobs/{job_id}")
def job_page(job_id: str):
    """One job (the page reads the id from its URL)."""
    return _page("job.html")


class _StaticHeaders:
    """ASGI wrapper adding :data:`SECURITY_HEADERS` and ``Cache-Control: no-cache``
    (revalidate: the files change with each release and carry ETags) to static files."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
                message["headers"] = list(message.get("headers", [])) + [
                    (k.lower().encode(), v.encode()) for k, v in extra.items()
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    """Add the dashboard pages and ``/static`` to ``app`` (no authentication: no data)."""
    app.include_router(router)
    app.mount("/static", _StaticHeaders(StaticFiles(directory=STATIC_DIR)), name="static")
