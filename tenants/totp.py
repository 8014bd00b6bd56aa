"""The optional second factor: TOTP codes (RFC 6238) from an authenticator app.

pyotp computes the codes; the secret lives in ``TotpDevice`` encrypted with the credential keys
(``tenants.crypto``), so a database dump alone does not give it away, and ``secrets_rotate``
re-encrypts it under a new first key like every other credential. A code is accepted in its
30 s step or one step either side (clock drift), and only once: the step it matched is
compare-and-set into ``last_used_step``, so a code seen over a shoulder or in a proxy cannot be
replayed. Recovery (a lost phone) is ``manage.py second_factor_reset <username>``.
"""

from __future__ import annotations

import hmac
import time

import pyotp
import segno
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tenants import crypto
from tenants.models import TotpDevice

DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1


def device_confirmed(user: AbstractBaseUser) -> TotpDevice | None:
    """The user's second factor, when enrolled and confirmed."""
    if user.pk is None:  # anonymous
        return None
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).first()


def enrolment_start(*, user: AbstractBaseUser) -> tuple[TotpDevice, str]:
    """The user's unconfirmed device and its secret (created on first call, the same secret on
    a reload until confirmed). Refused when a confirmed one exists."""
    with transaction.atomic():
        device = TotpDevice.objects.select_for_update().filter(user=user).first()
        if device is not None and device.confirmed_at is not None:
            raise ValueError("a confirmed second factor exists; reset it first")
        if device is None:
            device = TotpDevice.objects.create(
                user=user, encrypted_secret=crypto.encrypt(pyotp.random_base32(length=32))
            )
    return device, crypto.decrypt(device.encrypted_secret)


def provisioning_uri(*, user: AbstractBaseUser, secret: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    return totp.provisioning_uri(name=user.get_username(), issuer_name=settings.VP_TOTP_ISSUER)


def qr_svg(uri: str) -> str:
    """The URI as an inline SVG QR code (no image request, nothing sent elsewhere), with the
    4-module quiet zone readers expect."""
    return segno.make(uri, error="m").svg_inline(scale=4, border=4)


def _matching_step(secret: str, code: str, now: float) -> int | None:
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int(now) // STEP_SECONDS
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def code_verify(*, device: TotpDevice, code: str, now: float | None = None) -> bool:
    """True once per valid code: the matched step must be newer than the last one used."""
    secret = crypto.decrypt(device.encrypted_secret)
    step = _matching_step(secret, code, time.time() if now is None else now)
    if step is None:
        return False
    claimed = (
        TotpDevice.objects.filter(pk=device.pk)
        .filter(Q(last_used_step__isnull=True) | Q(last_used_step__lt=step))
        .update(last_used_step=step)
    )
    return claimed == 1


def enrolment_confirm(*, device: TotpDevice, code: str) -> bool:
    """Turn the second factor on when ``code`` proves the app holds the secret."""
    if not code_verify(device=device, code=code):
        return False
    TotpDevice.objects.filter(pk=device.pk).update(confirmed_at=timezone.now())
    return True


def second_factor_reset(*, user: AbstractBaseUser) -> bool:
    """Remove the user's second factor (recovery, or the member turning it off)."""
    deleted, _ = TotpDevice.objects.filter(user=user).delete()
    return deleted > 0


def secrets_rotate() -> int:
    """Re-encrypt every TOTP secret under the first credential key (for rotate_credentials)."""
    count = 0
    for device_id in TotpDevice.objects.values_list("pk", flat=True):
        with transaction.atomic():
            device = TotpDevice.objects.select_for_update().get(pk=device_id)
            device.encrypted_secret = crypto.rotate(device.encrypted_secret)
            device.save(update_fields=["encrypted_secret"])
        count += 1
    return count
