"""Persistence shared by every pelletseg process: the job table (:mod:`storage.jobtable`, the
source of truth for jobs, rows, models, webhooks and API keys) and the blob store
(:mod:`storage.blobs`, every byte outside the table), and what deleting a job does to both
(:mod:`storage.deletion`). Errors callers catch are in
:mod:`storage.errors`, never SQLAlchemy's or fsspec's.

May import: ``core``, SQLAlchemy, Alembic, fsspec; never ``worker``, ``training``, ``api``,
``queues`` or torch.
"""

__all__: list[str] = []
