"""Routers of the HTTP API: jobs, models (under /v1, authenticated) and health (open)."""
