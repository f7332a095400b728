"""The worker's Celery consumer: Celery's own, without the native delayed delivery bootstep.

On RabbitMQ pelletseg's queues are quorum queues (they count deliveries, see
``queues/app.py``). Celery >= 5.5 then starts ``DelayedDelivery``, which declares 28
``celery_delayed_*`` exchanges and queues on the broker, outside any queue prefix, for
countdown tasks routed through *topic* exchanges. pelletseg's exchanges are direct, so that
machinery could never carry one of its messages; the step is left out rather than littering
a shared broker. Everything else is Celery's consumer unchanged. Set as ``worker_consumer``
by :func:`worker.tasks.make_worker_app`.
"""

from __future__ import annotations

from typing import ClassVar

from celery.worker.consumer import Consumer as CeleryConsumer

DELAYED_DELIVERY_STEP = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):
    """Celery's consumer minus :data:`DELAYED_DELIVERY_STEP`."""

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps: ClassVar[list[str]] = [
            step for step in CeleryConsumer.Blueprint.default_steps
            if step != DELAYED_DELIVERY_STEP
        ]
