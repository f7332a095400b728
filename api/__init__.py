"""The HTTP API and dashboard (FastAPI): :func:`api.app.create_app` builds the app that ``pelletseg
serve`` runs. Routes (:mod:`api.routes`) import only their dependencies (:mod:`api.deps`,
typed ``Annotated`` aliases), services (:mod:`submission`, the job table, the blob store) and
schemas (:mod:`api.schemas`); the Deep Zoom viewer's tiles are in :mod:`api.viewer`.

May import: ``core``, ``storage``, ``queues``, ``models``, ``imaging``, ``submission`` and
``webhooks``; never ``worker``, ``training`` or torch (a test starts ``pelletseg serve`` and
checks ``sys.modules``).
"""

__all__ = ["app", "auth", "deps", "routes", "schemas", "viewer"]
