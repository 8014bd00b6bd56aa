"""Deployment checks of the platform's own security settings (``manage.py check --deploy``):
the console's Content-Security-Policy and the channel layer's encryption. Signing in has its
own (tenants/checks.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register

CSP_MIDDLEWARE = "csp.middleware.CSPMiddleware"


@register(Tags.security, deploy=True)
def check_content_security_policy(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    directives = (getattr(settings, "CONTENT_SECURITY_POLICY", None) or {}).get("DIRECTIVES", {})
    scripts = directives.get("script-src") or directives.get("default-src") or []
    if CSP_MIDDLEWARE not in settings.MIDDLEWARE or not scripts:
        return [
            Warning(
                "No Content-Security-Policy is sent: an injected script would run in the console.",
                hint=f"Keep {CSP_MIDDLEWARE} in MIDDLEWARE and a script-src in the policy.",
                id="voiceplatform.W001",
            )
        ]
    if any(source in ("'unsafe-inline'", "'unsafe-eval'", "*") for source in scripts):
        return [
            Warning(
                f"The Content-Security-Policy allows {scripts} for scripts: it stops nothing.",
                id="voiceplatform.W002",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_channel_layer_encryption(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    layer = settings.CHANNEL_LAYERS.get("default", {})
    if "redis" not in layer.get("BACKEND", "").lower():
        return []  # in memory: nothing leaves the process
    if not (layer.get("CONFIG") or {}).get("symmetric_encryption_keys"):
        return [
            Warning(
                "The channel layer is not encrypted: control messages and live transcripts "
                "cross Redis in plaintext.",
                hint="Set CONFIG['symmetric_encryption_keys'] (VP_CHANNEL_LAYER_KEYS).",
                id="voiceplatform.W003",
            )
        ]
    return []
