"""The cost of RabbitMQ publisher confirms (``queues.app.transport_options``): time to send N
row messages through pelletseg's Celery app with confirms (the default) and without
(``PELLETSEG_BROKER_TRANSPORT_OPTIONS='{"confirm_publish": false}'``), alternated, each on
fresh queues under a unique prefix that are deleted afterwards.

Run: ``python -m benchmarks.publish_confirms [--messages 200] [--pairs 2]
[--broker amqp://guest:guest@127.0.0.1:5672//]`` with RabbitMQ running.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

from core.settings import Settings
from queues.app import make_celery, send
from queues.deadletters import delete_queues
from queues.names import ROW_TASK


def send_time(broker: str, messages: int, confirm: bool) -> float:
    """Seconds to send ``messages`` ``segment_row`` messages after one warm-up send."""
    settings = Settings(home=tempfile.mkdtemp(prefix="pelletseg-confirms-"), broker_url=broker,
                        queue_prefix=f"b{uuid.uuid4().hex[:10]}-",
                        broker_transport_options={} if confirm else {"confirm_publish": False})
    app = make_celery(settings)
    try:
        send(app, ROW_TASK, "warm-up", 0)
        start = time.perf_counter()
        for i in range(messages):
            send(app, ROW_TASK, "job", i)
        return time.perf_counter() - start
    finally:
        delete_queues(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    for _ in range(args.pairs):
        for confirm in (True, False):
            seconds = send_time(args.broker, args.messages, confirm)
            print(f"confirm_publish={confirm}: {args.messages} messages in {seconds * 1e3:.0f} ms"
                  f" ({seconds / args.messages * 1e3:.2f} ms each)")


if __name__ == "__main__":
    main()
