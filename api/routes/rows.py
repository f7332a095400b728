"""``/v1/jobs/{id}/rows``: a job's row records (the dashboard's row map)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import TableDep
from api.schemas import ErrorOut, RowList, RowOut

router = APIRouter(tags=["jobs"])


@router.get(
    "/jobs/{job_id}/rows", response_model=RowList,
    responses={404: {"model": ErrorOut, "description": "No job has this id."}},
)
def list_job_rows(job_id: str, table: TableDep):
    """Every row record of a job in index order: status, image rows ``[y0, y1)``, attempts,
    seconds, last error and worker. Empty until the job is planned."""
    table.jobs.get(job_id)  # 404 for an unknown job
    return RowList(
        job_id=job_id,
        rows=[
            RowOut(index=r.index, status=r.status, y0=r.y0, y1=r.y1, attempts=r.attempts,
                   seconds=r.seconds, error=r.error, worker=r.worker, inference=r.inference,
                   started_at=r.started_at, finished_at=r.finished_at)
            for r in table.rows.list(job_id)
        ],
    )
