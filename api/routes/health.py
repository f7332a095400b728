"""``/healthz`` (liveness) and ``/readyz`` (readiness: job table and broker), no auth."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.schemas import HealthOut, ReadyOut
from storage.jobtable.engine import cached_engine, ping

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 3.0


@router.get("/healthz", response_model=HealthOut)
def healthz():
    """The process is alive (checks nothing else)."""
    return HealthOut(status="ok")


def _check_database(services) -> None:
    ping(cached_engine(services.settings.resolved_database_url))


def _check_broker(services) -> None:
    with services.celery.connection_for_write() as conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=READY_TIMEOUT_S
        )


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
def readyz(request: Request):
    """200 when the job table answers ``SELECT 1`` and the broker accepts a connection, both
    within 3 s; else 503 naming what failed."""
    services = request.app.state.services
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")
    futures = {
        "database": pool.submit(_check_database, services),
        "broker": pool.submit(_check_broker, services),
    }
    deadline = time.monotonic() + READY_TIMEOUT_S
    checks: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            checks[name] = "ok"
        except FutureTimeout:
            checks[name] = f"no answer within {READY_TIMEOUT_S:g} s"
        except Exception as e:
            checks[name] = f"{type(e).__name__}: {e}"[:500]
    pool.shutdown(wait=False, cancel_futures=True)
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        body = ReadyOut(status="not ready", checks=checks,
                        detail=f"not ready: {', '.join(failed)} failed")
        return JSONResponse(body.model_dump(), status_code=503)
    return ReadyOut(status="ready", checks=checks)
