"""``/v1/jobs/{id}/tiles``: Deep Zoom descriptors and tiles of a succeeded job's layers
(``overlay``, ``labels``, ``source``, ``confidence``), for the dashboard's OpenSeadragon viewer.

``GET .../tiles/{layer}.dzi`` is the DZI descriptor; its tiles are
``GET .../tiles/{layer}_files/{level}/{col}_{row}.{jpeg|png}`` (the DZI URL convention, so any
Deep Zoom viewer that can send the ``Authorization`` header reads them). Tiles of a succeeded
job never change: they carry an ``ETag`` and ``Cache-Control: private, max-age=86400``, and a
matching ``If-None-Match`` is answered 304 without reading pixels.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from api.deps import TableDep
from api.schemas import ErrorOut
from api.viewer.deepzoom import (
    DZ_TILE_SIZE,
    JPEG_QUALITY,
    MEDIA_TYPE,
    OVERLAP,
    TILE_FORMAT,
    DeepZoomGrid,
    PixelKind,
    TileError,
    encode_tile,
)
from api.viewer.layers import LAYER_KIND, Layer, LayerFiles, LayerUnavailable
from core.states import JobStatus
from imaging import palette_lut
from storage.jobtable import Job, JobTable

router = APIRouter(tags=["viewer"])

CACHE_CONTROL = "private, max-age=86400"
#: Bump when tile pixels change for the same job (encoding, geometry), to refresh ETags.
TILE_VERSION = 1
RESPONSES = {
    304: {"description": "The tile matches If-None-Match."},
    404: {"model": ErrorOut, "description": "No such job, layer, level or tile."},
    409: {"model": ErrorOut, "description": "The job has not succeeded."},
}


def layer_files(request: Request) -> LayerFiles:
    """The app's :class:`LayerFiles` (made on first use; cache under the settings' cache dir)."""
    state = request.app.state
    files = getattr(state, "layer_files", None)
    if files is None:
        svc = state.services
        files = LayerFiles(svc.blobs, svc.settings.resolved_cache_dir,
                           svc.settings.allowed_source_schemes)
        state.layer_files = files
    return files


LayerFilesDep = Annotated[LayerFiles, Depends(layer_files)]


def _layer(name: str) -> Layer:
    try:
        return Layer(name)
    except ValueError:
        raise HTTPException(
            404, f"no layer {name!r}; layers are {', '.join(layer.value for layer in Layer)}"
        ) from None


def _viewable(table: JobTable, job_id: str) -> Job:
    job = table.jobs.get(job_id)
    if job.status != JobStatus.SUCCEEDED or not job.width or not job.height:
        raise HTTPException(409, f"job {job_id} is {job.status}; it can be viewed once it has "
                                 "succeeded")
    return job


def _etag(job: Job, *parts) -> str:
    finished = job.finished_at.isoformat() if job.finished_at else ""
    text = "|".join(map(str, (TILE_VERSION, DZ_TILE_SIZE, OVERLAP, JPEG_QUALITY, job.id,
                              finished, *parts)))
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def _not_modified(request: Request, etag: str) -> bool:
    sent = request.headers.get("if-none-match", "")
    return etag in [t.strip().removeprefix("W/") for t in sent.split(",")] or sent.strip() == "*"


@lru_cache(maxsize=32)
def _lut(palette: tuple[tuple[int, int, int], ...]):
    return palette_lut(palette)


def job_palette(table: JobTable, job: Job) -> tuple[tuple[int, int, int], ...]:
    """RGB colour of each class index of the job's model (black where a class has none)."""
    model = table.models.get(job.model_name, job.model_version)
    by_index = {int(c["index"]): c.get("rgb") for c in model.classes or []}
    size = max(by_index, default=-1) + 1
    return tuple(tuple(int(v) for v in (by_index.get(i) or (0, 0, 0))) for i in range(size))


@router.get(
    "/jobs/{job_id}/tiles/{layer}.dzi", response_class=Response,
    responses={200: {"content": {"application/xml": {}}}, **RESPONSES},
)
def deep_zoom_descriptor(job_id: str, layer: str, request: Request, table: TableDep,
                         files: LayerFilesDep):
    """The Deep Zoom (DZI) descriptor of a layer of a succeeded job: ``overlay`` (the source
    blended with the label colours), ``labels`` (label colours), ``source`` (the image) or
    ``confidence`` (the confidence colours; 404 for a job without ``confidence.tif``)."""
    kind = _layer(layer)
    job = _viewable(table, job_id)
    etag = _etag(job, kind, "dzi")
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    try:
        files.check(job, kind)
    except LayerUnavailable as e:
        raise HTTPException(404, str(e)) from e
    xml = DeepZoomGrid(job.width, job.height).dzi_xml(TILE_FORMAT[LAYER_KIND[kind]])
    return Response(xml, media_type="application/xml", headers=headers)


@router.get(
    "/jobs/{job_id}/tiles/{layer}_files/{level:int}/{col:int}_{row:int}.{ext}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, **RESPONSES},
)
def deep_zoom_tile(job_id: str, layer: str, level: int, col: int, row: int, ext: str,
                   request: Request, table: TableDep, files: LayerFilesDep):
    """One Deep Zoom tile: ``DZ_TILE_SIZE`` px plus ``OVERLAP`` px on interior sides (smaller at
    the right and bottom edges); JPEG for ``overlay`` and ``source``, PNG for ``labels`` and
    ``confidence``.
    The first tile of ``source`` converts the source image to a pyramid (once)."""
    kind = _layer(layer)
    pixels = LAYER_KIND[kind]
    if ext != TILE_FORMAT[pixels]:
        raise HTTPException(404, f"tiles of layer {layer!r} are .{TILE_FORMAT[pixels]}")
    job = _viewable(table, job_id)
    grid = DeepZoomGrid(job.width, job.height)
    try:
        grid.tile_box(level, col, row)
    except TileError as e:
        raise HTTPException(404, f"job {job_id}, layer {layer}: {e}") from e
    etag = _etag(job, kind, level, col, row)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    try:
        pyramid = files.open(job, kind)
    except LayerUnavailable as e:
        raise HTTPException(404, str(e)) from e
    if (pyramid.width, pyramid.height) != (job.width, job.height):
        raise HTTPException(
            409, f"layer {layer} of job {job_id} is {pyramid.width}x{pyramid.height} px but "
                 f"the job's image is {job.width}x{job.height} px"
        )
    lut = _lut(job_palette(table, job)) if pixels == PixelKind.LABELS else None
    data = encode_tile(pyramid.read(grid, level, col, row), pixels, lut)
    return Response(data, media_type=MEDIA_TYPE[TILE_FORMAT[pixels]], headers=headers)
