"""Shared route dependencies."""

from __future__ import annotations

from fastapi import Request


def services(request: Request):
    """The app's :class:`api.app.Services` (job table, blob store, task sender)."""
    return request.app.state.services
