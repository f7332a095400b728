"""The queue stages of a job, plain functions on a :class:`worker.context.WorkerContext`
that the Celery tasks (:mod:`worker.tasks`) call: plan (:mod:`~worker.stages.planning`),
segment one row (:mod:`~worker.stages.segmenting`), reduce (:mod:`~worker.stages.reducing`,
with the confidence outputs of :mod:`~worker.stages.confidence`),
stitch while the rows run (:mod:`~worker.stages.streaming`), reconcile lost work
(:mod:`~worker.stages.reconciling`), deliver webhooks (:mod:`~worker.stages.notifying`), and
where a job's source is read from (:mod:`~worker.stages.sources`). Every stage may run more
than once: each is idempotent through the job table and deterministic blob keys.

May import: ``core``, ``storage``, ``queues`` (task names), ``models``, ``imaging``,
``microstructure``, ``webhooks`` and ``worker.engine``; never ``api`` or ``training``.
"""

__all__ = ["confidence", "notifying", "planning", "reconciling", "reducing", "segmenting",
           "sources", "streaming"]
