"""Deployment checks for signing in (``manage.py check --deploy``).

Registered on import: ``TenantsConfig.ready()`` imports this module.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register

UNSENT_MAIL_BACKENDS = (
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
)


@register(Tags.security, deploy=True)
def check_login_throttling(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if getattr(settings, "AXES_ENABLED", True):
        return []
    return [
        Warning(
            "Login throttling is off (AXES_ENABLED = False): passwords and second-factor codes "
            "can be guessed without limit.",
            id="tenants.W001",
        )
    ]


@register(Tags.security, deploy=True)
def check_password_reset_mail(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    problems = []
    if settings.EMAIL_BACKEND in UNSENT_MAIL_BACKENDS:
        problems.append(
            Warning(
                f"EMAIL_BACKEND is {settings.EMAIL_BACKEND}: password-reset mails are never sent.",
                hint="Set EMAIL_HOST (and EMAIL_HOST_USER, EMAIL_HOST_PASSWORD) for SMTP.",
                id="tenants.W002",
            )
        )
    if settings.DEFAULT_FROM_EMAIL.rstrip(">").endswith("@localhost"):
        problems.append(
            Warning(
                f"DEFAULT_FROM_EMAIL is {settings.DEFAULT_FROM_EMAIL!r}: mail servers refuse or "
                "junk mail from it.",
                hint="Set DEFAULT_FROM_EMAIL to an address your mail server may send from.",
                id="tenants.W003",
            )
        )
    return problems
