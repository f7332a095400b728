"""The API's routes, one module per resource: jobs, rows, batches, uploads, models, the
viewer's Deep Zoom tiles, health, Prometheus metrics and the dashboard's pages. Each declares
what it needs with the dependency aliases of :mod:`api.deps`."""

__all__ = ["batches", "dashboard", "health", "jobs", "metrics", "models", "rows", "uploads",
           "viewer"]
