"""API-key authentication of the ``/v1`` routes: ``Authorization: Bearer psk_...``.

Keys are created with ``pelletseg apikey create NAME`` and stored hashed
(:mod:`storage.jobtable.api_keys`). Authentication can be switched off (``PELLETSEG_API_AUTH=false``,
``pelletseg serve --no-auth``) only while the API binds a loopback address.
"""

from __future__ import annotations

import ipaddress

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.settings import Settings
from storage.jobtable import ApiKey

#: Shown in the OpenAPI page as the "bearer" security scheme; errors are raised below.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key: psk_...")

HOW_TO_GET_A_KEY = "create one with `pelletseg apikey create NAME`"


class AuthConfigError(ValueError):
    """Authentication is switched off while the API binds a non-loopback address."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_binding(settings: Settings) -> None:
    """Refuse to run without authentication on anything but a loopback address.

    Raises:
        AuthConfigError: ``settings.api_auth`` is false and ``settings.api_host`` is not
            loopback.
    """
    if not settings.api_auth and not is_loopback(settings.api_host):
        raise AuthConfigError(
            f"authentication may be switched off only when the API binds 127.0.0.1 "
            f"(it would bind {settings.api_host}); use an API key instead ({HOW_TO_GET_A_KEY})"
        )


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"}
    )


def require_api_key(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
) -> ApiKey | None:
    """FastAPI dependency of every ``/v1`` route.

    Returns:
        The caller's key record (also on ``request.state.api_key``), or None when
        authentication is switched off.

    Raises:
        HTTPException: 401 when the header is missing, malformed or names no key; 403 when
            the key was revoked.
    """
    settings: Settings = request.app.state.settings
    if not settings.api_auth:
        request.state.api_key = None
        return None
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized(
            f"missing Authorization header: send 'Authorization: Bearer <API key>' "
            f"({HOW_TO_GET_A_KEY})"
        )
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("malformed Authorization header: expected 'Bearer <API key>'")
    record = request.app.state.services.table.api_keys.verify(credentials.credentials.strip())
    if record is None:
        raise _unauthorized(f"invalid API key ({HOW_TO_GET_A_KEY})")
    if record.revoked_at is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"API key {record.prefix}... ({record.name}) was revoked at "
            f"{record.revoked_at.isoformat(timespec='seconds')}",
        )
    request.state.api_key = record
    return record
