"""Abuse limits of the public widget endpoint (``POST /widget/session``).

The widget key is public and the Origin header is only a browser's promise: outside a browser
anyone can present both. So minting is rate-limited per client address (an IPv6 /64 counts as
one, django-ratelimit's default mask) and per widget key, in the shared cache (Redis in
production), with django-ratelimit's fixed windows. Every widget socket needs a token minted
here, so the sockets are limited with it. When the cache is down the limits fail open: a
Redis outage must not take every tenant's widget down (admission and the tenant's concurrency
limit still hold).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from tenants.ratelimits import Limited, first_limited


def widget_session_limited(request: HttpRequest, *, widget_key: str) -> Limited | None:
    """Count this mint against the caller's address and the widget key; None when allowed."""
    return first_limited(
        request,
        group="widget-session",
        checks=(
            ("address", "ip", settings.VP_WIDGET_SESSION_RATE_PER_ADDRESS),
            ("key", lambda group, request: widget_key, settings.VP_WIDGET_SESSION_RATE_PER_KEY),
        ),
    )
