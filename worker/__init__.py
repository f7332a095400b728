"""The queue worker: Celery tasks (:mod:`worker.tasks`, the ``celery -A worker.tasks`` app)
that unpack a message and run a stage (:mod:`worker.stages`) with the inference engine
(:mod:`worker.engine`); around them the at-least-once delivery policy and dead-lettering
(:mod:`worker.deadletter`), row and stitch lease renewal (:mod:`worker.leases`), the spot
interruption watcher (:mod:`worker.spot`), and local worker processes for ``pelletseg run``
and ``pelletseg worker`` (:mod:`worker.local`), the worker's log (:mod:`worker.logs`), the
background imports at worker start (:mod:`worker.preload`) and the machine's cache of each
job's files, removed once the job ends (:mod:`worker.cache`).

May import: ``core``, ``storage``, ``queues``, ``models``, ``imaging``, ``microstructure``,
``webhooks``, Celery and torch; never ``api``, ``submission``, ``training``, ``cli`` or
``benchmarks``.
"""

__all__ = ["cache", "context", "deadletter", "engine", "local", "logs", "preload", "stages", "tasks"]
