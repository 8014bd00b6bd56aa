"""Rate limits in the shared cache (django-ratelimit), for the platform's public doors.

``first_limited`` counts one request against each (scope, key) in turn and names the first
scope over its rate. When the cache (Redis) is unreachable it fails open, loudly: an outage of
the cache must not close the widget or the password reset; the limits that must hold whatever
happens (concurrency, spend) live in the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django_ratelimit.core import get_usage

logger = logging.getLogger(__name__)

Key = str | Callable[[str, HttpRequest], str]


@dataclass(frozen=True)
class Limited:
    scope: str
    retry_after_s: int


def first_limited(
    request: HttpRequest, *, group: str, checks: Iterable[tuple[str, Key, str]]
) -> Limited | None:
    """``checks``: (scope, django-ratelimit key, rate). None when every one allows it."""
    for scope, key, rate in checks:
        try:
            usage: dict[str, Any] | None = get_usage(
                request, group=f"{group}-{scope}", key=key, rate=rate, increment=True
            )
        except Exception:  # the cache is unreachable: fail open
            logger.warning("%s rate limit by %s unavailable", group, scope, exc_info=True)
            continue
        if usage is not None and usage["should_limit"]:
            return Limited(scope, max(1, int(usage["time_left"])))
    return None
