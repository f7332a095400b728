"""``GET /metrics``: Prometheus exposition (``prometheus_client``), no auth, like /healthz.

Everything is computed at scrape time from the job table (:func:`storage.jobtable.stats.table_stats`)
and the broker, so any API replica answers the same. Metrics:

=====================================  =========  ==========================================
``pelletseg_jobs{status}``             gauge      jobs per status
``pelletseg_active_rows{status}``      gauge      row records of jobs that have not ended
``pelletseg_rows_done_total``          counter    row records done; ``rate()`` = rows/s
``pelletseg_pixels_done_total``        counter    pixels segmented; ``rate()/1e6`` = Mpx/s
``pelletseg_reduce_duration_seconds``  histogram  reducer time of succeeded jobs
``pelletseg_webhooks{status}``         gauge      webhook deliveries per state
``pelletseg_queue_messages{queue}``    gauge      messages waiting, where the broker tells
``pelletseg_job_table_up``,            gauge      1 if the job table / broker answered
``pelletseg_broker_up``
=====================================  =========  ==========================================

Queue depth comes from kombu, which each transport answers its own way: the size of a
virtual transport's queue (Redis ``LLEN`` over its priority lists, SQS
``ApproximateNumberOfMessages``, a count of visible ``kombu_message`` rows on the embedded
broker) and RabbitMQ's passive-declare message count. Queue names carry
``PELLETSEG_QUEUE_PREFIX``; the ``queue`` label is the logical name.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import structlog
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from queues.depths import BROKER_TIMEOUT_S, queue_depths
from queues.names import QUEUES, queue_name
from storage.errors import StorageError
from storage.jobtable.stats import table_stats

router = APIRouter(tags=["health"])
log = structlog.get_logger(__name__)


class JobTableCollector:
    """A ``prometheus_client`` collector reading the job table and broker on each scrape."""

    def __init__(self, services):
        self.services = services

    def collect(self):
        yield from self._table()
        yield from self._broker()

    def _table(self):
        up = GaugeMetricFamily("pelletseg_job_table_up", "1 if the job table answered.")
        try:
            stats = table_stats(self.services.table)
        except StorageError as e:
            log.warning("metrics.job_table", error=str(e))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("pelletseg_jobs", "Jobs per status.", labels=["status"])
        for status, n in stats.jobs_by_status.items():
            jobs.add_metric([status], n)
        yield jobs
        rows = GaugeMetricFamily("pelletseg_active_rows",
                                 "Row records of jobs that have not ended, per row status.",
                                 labels=["status"])
        for status, n in stats.active_rows_by_status.items():
            rows.add_metric([status], n)
        yield rows
        yield CounterMetricFamily("pelletseg_rows_done", "Row records done (rate() = rows/s).",
                                  value=stats.rows_done)
        yield CounterMetricFamily("pelletseg_pixels_done",
                                  "Image pixels segmented (rate()/1e6 = Mpx/s).",
                                  value=stats.pixels_done)
        reduce = HistogramMetricFamily("pelletseg_reduce_duration_seconds",
                                       "Reducer time of succeeded jobs (s).")
        buckets = [(floatToGoString(b), n) for b, n in stats.reduce_buckets] + [("+Inf", stats.reduce_count)]
        reduce.add_metric([], buckets, sum_value=stats.reduce_sum)
        yield reduce
        hooks = GaugeMetricFamily("pelletseg_webhooks", "Webhook deliveries per state.",
                                  labels=["status"])
        for status in ("pending", "sending", "delivered", "failed"):
            hooks.add_metric([status], stats.webhooks_by_status.get(status, 0))
        yield hooks

    def _broker(self):
        up = GaugeMetricFamily("pelletseg_broker_up", "1 if the broker answered.")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")
        try:
            names = {q: queue_name(self.services.settings, q) for q in QUEUES}
            depths = pool.submit(queue_depths, self.services.celery, names).result(
                timeout=BROKER_TIMEOUT_S + 1)
        except (FutureTimeout, Exception) as e:
            log.warning("metrics.broker", error=f"{type(e).__name__}: {e}")
            up.add_metric([], 0)
            yield up
            return
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        up.add_metric([], 1)
        yield up
        gauge = GaugeMetricFamily("pelletseg_queue_messages",
                                  "Messages waiting in each queue (where the broker tells).",
                                  labels=["queue"])
        for queue, n in depths.items():
            gauge.add_metric([queue], n)
        yield gauge


@router.get(
    "/metrics", response_class=Response, include_in_schema=True,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                     "description": "Prometheus text exposition format."}},
)
def metrics(request: Request):
    """Prometheus metrics (jobs by status, rows and pixels done, queue depth, reducer
    durations, webhook deliveries), computed from the job table at scrape time. No auth:
    restrict it at the load balancer if it must not be public."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobTableCollector(request.app.state.services))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
