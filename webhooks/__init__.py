"""End-of-job webhooks as the receiver sees them: the URL rule (http(s), public addresses
only), the JSON body, the HMAC-SHA256 signature and the signed POST. The outbox that makes
delivery reliable is job-table state (:mod:`storage.jobtable.webhook_outbox`); the task that
sends it is a queue stage (:mod:`worker.stages.notifying`).

May import: ``core``, ``storage`` (for the outbox's attempt record) and httpx; never
``worker``, ``api`` or torch.
"""

from webhooks.messages import USER_AGENT, payload, post
from webhooks.signing import (
    DEFAULT_TOLERANCE_S,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    sign,
    verify,
)
from webhooks.urls import WebhookUrlError, check_webhook_url

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "WebhookUrlError",
    "check_webhook_url",
    "payload",
    "post",
    "sign",
    "verify",
]
