"""The rule for webhook URLs: http(s), no credentials, and (unless allowed) only public
addresses, checked at submission and again before each delivery (server-side request forgery
guard; the host may resolve elsewhere by then)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

__all__ = ["WebhookUrlError", "check_webhook_url"]


class WebhookUrlError(ValueError):
    """A webhook URL is not http(s), carries credentials, cannot be resolved, or resolves to a
    private address (server-side request forgery guard)."""


def check_webhook_url(url: str, allow_private: bool) -> str:
    """Check a webhook URL against server-side request forgery.

    It must be ``http(s)://host...`` without credentials, and every address ``host`` resolves
    to must be public (not loopback, private, link-local, multicast, reserved or unspecified)
    unless ``allow_private``. Called at submission and again before each delivery (the host
    may resolve elsewhere by then).

    Returns:
        ``url`` unchanged.

    Raises:
        WebhookUrlError: wrong scheme, credentials, no host, unresolvable host or a
            non-public address.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise WebhookUrlError(f"webhook_url {url!r} must be an http:// or https:// URL")
    if not parsed.hostname:
        raise WebhookUrlError(f"webhook_url {url!r} has no host")
    if parsed.username or parsed.password:
        raise WebhookUrlError(f"webhook_url {url!r} must not carry credentials")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        infos = socket.getaddrinfo(parsed.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as e:
        raise WebhookUrlError(f"webhook_url {url!r}: cannot resolve its host ({e})") from e
    if allow_private:
        return url
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise WebhookUrlError(
                f"webhook_url {url!r} resolves to {address}, a loopback, private, link-local "
                "or reserved address; webhooks must reach a public address"
            )
    return url
