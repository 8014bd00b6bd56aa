"""Exact web origins (scheme, host, port), as browsers send them in the ``Origin`` header."""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidOrigin(ValueError):
    pass


def origin_normalize(value: str) -> str:
    """``HTTPS://Shop.Example.com:443`` → ``https://shop.example.com``.

    Accepts only ``scheme://host[:port]``: no path, query, user info or wildcard, so that an
    allowed origin means exactly one site.
    """
    text = value.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidOrigin(f"{value!r}: an origin starts with http:// or https://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidOrigin(f"{value!r}: an origin has no path, query or fragment")
    if parts.username or parts.password:
        raise InvalidOrigin(f"{value!r}: an origin has no user name or password")
    host = (parts.hostname or "").lower()
    if not host or "*" in host:
        raise InvalidOrigin(f"{value!r}: an origin needs an exact host name")
    try:
        port = parts.port
    except ValueError:
        raise InvalidOrigin(f"{value!r}: the port is not valid") from None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_is_allowed(origin: str | None, allowed_origins: list[str]) -> bool:
    """True only for an Origin header equal to one of the allowed origins (after normalising)."""
    if not origin or origin == "null":
        return False
    try:
        normalized = origin_normalize(origin)
    except InvalidOrigin:
        return False
    return normalized in allowed_origins
