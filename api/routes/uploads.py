"""``/v1/uploads``: resumable uploads of large images into the blob store.

Flow: ``POST /v1/uploads`` (name, size) -> an upload id, its parts and PUT URLs for the
first parts; PUT each part (S3: to its presigned URL; local store: to
``PUT /v1/uploads/{id}/parts/{n}`` with the API key, streamed to disk); ``GET
/v1/uploads/{id}`` lists the parts that arrived, so an interrupted client sends only the
others; ``POST /v1/uploads/{id}/urls`` gives fresh URLs; ``POST /v1/uploads/{id}/complete``
joins the parts; then ``POST /v1/jobs {"upload_id": id}`` (for a completed OME-TIFF of several
scenes, whose ``scenes`` the upload lists, ``POST /v1/batches`` with a job per scene, as the
dashboard does). ``DELETE`` aborts (or deletes a finished upload no running job reads).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, SubmissionsDep, UploadsDep
from api.schemas import ErrorOut, PartOut, UploadCreate, UploadOut, UploadUrlsRequest
from storage.blobs import UploadManifest, UploadStore
from storage.jobtable import utcnow
from submission import upload_scenes

router = APIRouter(tags=["uploads"])

NOT_FOUND = {404: {"model": ErrorOut, "description": "No upload has this id."}}
CONFLICT = {409: {"model": ErrorOut, "description": "Not allowed in the upload's state."}}
INVALID = {422: {"model": ErrorOut, "description": "Invalid request."}}
#: Part URLs handed out with a new upload (more through POST /v1/uploads/{id}/urls).
FIRST_URLS = 100
#: Bytes of a part body buffered before each write to disk.
WRITE_BUFFER = 1 << 20


def upload_out(request: Request, store: UploadStore, manifest: UploadManifest,
               url_parts: list[int] = (), expires_s: int = 0) -> UploadOut:
    """The API view of an upload: state, parts that arrived, and URLs for ``url_parts``."""
    parts = store.list_parts(manifest)
    urls: dict[int, str] = {}
    if url_parts:
        if manifest.backend == "s3":
            urls = store.part_urls(manifest, list(url_parts), expires_s)
        else:
            urls = {n: str(request.url_for("put_upload_part", upload_id=manifest.id, number=n))
                    for n in url_parts}
    complete = manifest.completed_at is not None
    source_url = store.blobs.url(manifest.key) if complete else None
    return UploadOut(
        id=manifest.id, filename=manifest.filename, key=manifest.key, size=manifest.size,
        part_size=manifest.part_size, parts=manifest.parts, storage=manifest.backend,
        parts_uploaded=[PartOut(number=p.number, size=p.size, etag=p.etag) for p in parts],
        bytes_uploaded=sum(p.size for p in parts), complete=complete,
        created_at=manifest.created_at, completed_at=manifest.completed_at,
        source_url=source_url,
        scenes=upload_scenes(store.blobs, manifest.key) if complete else [],
        urls=urls, urls_expire_at=utcnow() + timedelta(seconds=expires_s) if urls else None,
    )


@router.post("/uploads", status_code=201, response_model=UploadOut, responses=INVALID)
def create_upload(body: UploadCreate, request: Request, response: Response, uploads: UploadsDep,
                  settings: SettingsDep):
    """Start an upload of ``size`` bytes; returns its parts and PUT URLs for the first 100."""
    manifest = uploads.create(body.filename, body.size, body.part_size)
    response.headers["Location"] = str(request.url_for("get_upload", upload_id=manifest.id))
    first = list(range(1, min(manifest.parts, FIRST_URLS) + 1))
    return upload_out(request, uploads, manifest, first, settings.upload_url_expires_seconds)


@router.get("/uploads/{upload_id}", response_model=UploadOut, responses=NOT_FOUND)
def get_upload(upload_id: str, request: Request, uploads: UploadsDep):
    """An upload's state and the parts that arrived (a resuming client skips those)."""
    return upload_out(request, uploads, uploads.get(upload_id))


@router.post("/uploads/{upload_id}/urls", response_model=UploadOut,
             responses={**NOT_FOUND, **CONFLICT, **INVALID})
def upload_urls(upload_id: str, body: UploadUrlsRequest, request: Request, uploads: UploadsDep,
                settings: SettingsDep):
    """Fresh PUT URLs of the given parts (presigned on S3, valid
    PELLETSEG_UPLOAD_URL_EXPIRES_SECONDS)."""
    manifest = uploads.get(upload_id)
    if manifest.completed_at is not None:
        raise HTTPException(409, f"upload {upload_id} is already complete")
    for n in body.parts:
        manifest.part_length(n)
    return upload_out(request, uploads, manifest, sorted(set(body.parts)),
                      settings.upload_url_expires_seconds)


@router.put(
    "/uploads/{upload_id}/parts/{number}", name="put_upload_part", response_model=PartOut,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
    responses={**NOT_FOUND, **CONFLICT, **INVALID,
               413: {"model": ErrorOut, "description": "Longer than the part."}},
)
async def put_part(upload_id: str, number: int, request: Request, response: Response,
                   uploads: UploadsDep):
    """Local store only: the raw bytes of part ``number`` (1-based), streamed to disk. The
    answer's ``ETag`` is the part's hex MD5. Sending a part again replaces it."""
    store = uploads
    manifest = await run_in_threadpool(store.get, upload_id)
    writer = await run_in_threadpool(store.open_part, manifest, number)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > writer.length:
        writer.discard()
        raise HTTPException(413, f"part {number} is {writer.length} bytes; the body declares "
                                 f"{declared}")
    with writer:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER:
                await run_in_threadpool(writer.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await run_in_threadpool(writer.write, bytes(buffer))
        part = await run_in_threadpool(writer.commit)
    response.headers["ETag"] = f'"{part.etag}"'
    return PartOut(number=part.number, size=part.size, etag=part.etag)


@router.post("/uploads/{upload_id}/complete", response_model=UploadOut,
             responses={**NOT_FOUND, **CONFLICT})
def complete_upload(upload_id: str, request: Request, uploads: UploadsDep):
    """Join the parts into the file (409 naming missing or short parts); idempotent."""
    return upload_out(request, uploads, uploads.complete(uploads.get(upload_id)))


@router.delete("/uploads/{upload_id}", status_code=204, response_class=Response,
               responses={**NOT_FOUND, **CONFLICT})
def abort_upload(upload_id: str, submissions: SubmissionsDep):
    """Abort an upload (or delete a finished one): its parts, file and state are removed.
    409 while a job that reads it has not ended (a resume re-reads the source; the message
    names the jobs); jobs that ended keep their outputs."""
    submissions.delete_upload(upload_id)
    return Response(status_code=204)
