"""Writes for tenants, members and credentials. One write path per model."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from tenants import crypto
from tenants.models import ApiKey, Membership, ProviderCredential, Role, Tenant, WidgetKey
from tenants.origins import origin_normalize
from tenants.scoping import scopes_disabled, tenant_scope

API_KEY_PREFIX = "vp_live_"
WIDGET_KEY_PREFIX = "vp_pk_"
# A key's last-used time is a hint, not an audit trail: write it at most this often.
API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)


class ServiceError(ValueError):
    """A request that cannot be carried out, with a message fit for the user."""


def user_get_or_create(*, email: str, password: str | None = None) -> AbstractBaseUser:
    """A login named by its e-mail address. A given password is (re)set."""
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=email, defaults={"email": email})
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    return user


@transaction.atomic
def tenant_create(*, slug: str, name: str, owner: AbstractBaseUser) -> Tenant:
    if slugify(slug) != slug or not slug:
        raise ServiceError(f"{slug!r} is not a valid slug (lowercase letters, digits, hyphens)")
    if Tenant.objects.filter(slug=slug).exists():
        raise ServiceError(f"a tenant with slug {slug!r} already exists")
    tenant = Tenant.objects.create(slug=slug, name=name)
    with tenant_scope(tenant):
        Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
    return tenant


def membership_set(*, tenant: Tenant, user: AbstractBaseUser, role: str) -> Membership:
    if role not in Role.values:
        raise ServiceError(f"unknown role {role!r}")
    with tenant_scope(tenant):
        membership, _ = Membership.objects.update_or_create(
            tenant=tenant, user=user, defaults={"role": role}
        )
    return membership


def provider_credential_set(
    *, tenant: Tenant, secret: str, provider: str = ProviderCredential.Provider.OPENAI
) -> ProviderCredential:
    """Store (or replace) the tenant's provider key, encrypted; only its mask stays readable."""
    secret = secret.strip()
    if len(secret) < 20 or any(character.isspace() for character in secret):
        raise ServiceError("that does not look like an API key")
    with tenant_scope(tenant):
        credential, _ = ProviderCredential.objects.update_or_create(
            tenant=tenant,
            provider=provider,
            defaults={"encrypted_secret": crypto.encrypt(secret), "masked": crypto.mask(secret)},
        )
    return credential


def credentials_rotate() -> int:
    """Re-encrypt every stored credential under the first configured key. Returns the count.

    Each row is rotated in its own transaction, so an interrupted run can simply be re-run.
    """
    count = 0
    with scopes_disabled():
        for credential_id in ProviderCredential.objects.values_list("pk", flat=True):
            with transaction.atomic():
                credential = ProviderCredential.objects.select_for_update().get(pk=credential_id)
                credential.encrypted_secret = crypto.rotate(credential.encrypted_secret)
                credential.save(update_fields=["encrypted_secret", "updated_at"])
            count += 1
    return count


def _hash_key(raw_key: str) -> str:
    # API keys carry 256 bits of randomness, so a fast unsalted hash is enough to make a leaked
    # table useless, and it lets the key be found by an indexed lookup.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_issue(
    *, tenant: Tenant, name: str, default_agent: object | None = None
) -> tuple[ApiKey, str]:
    """Create a platform API key. The raw key is returned once and never stored."""
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    with tenant_scope(tenant):
        api_key = ApiKey.objects.create(
            tenant=tenant,
            name=name or "API key",
            prefix=raw_key[: len(API_KEY_PREFIX) + 6],
            hashed_key=_hash_key(raw_key),
            default_agent=default_agent,
        )
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        with tenant_scope(api_key.tenant_id):
            api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The active key matching ``raw_key`` (with its tenant), or None. Records its use."""
    if not raw_key.startswith(API_KEY_PREFIX):
        return None
    with scopes_disabled():
        api_key = (
            ApiKey.objects.select_related("tenant")
            .filter(hashed_key=_hash_key(raw_key), revoked_at__isnull=True)
            .first()
        )
        if api_key is None:
            return None
        now = timezone.now()
        if (
            api_key.last_used_at is None
            or now - api_key.last_used_at > API_KEY_LAST_USED_RESOLUTION
        ):
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now
    return api_key


def origins_clean(origins: list[str]) -> list[str]:
    """Normalise a list of origins, dropping duplicates; raises ``InvalidOrigin``."""
    cleaned: list[str] = []
    for origin in origins:
        normalized = origin_normalize(origin)
        if normalized not in cleaned:
            cleaned.append(normalized)
    return cleaned


def widget_key_create(
    *, tenant: Tenant, name: str, allowed_origins: list[str], agent: object | None = None
) -> WidgetKey:
    with tenant_scope(tenant):
        return WidgetKey.objects.create(
            tenant=tenant,
            name=name,
            key=WIDGET_KEY_PREFIX + secrets.token_urlsafe(18),
            allowed_origins=origins_clean(allowed_origins),
            agent=agent,
        )


def widget_key_revoke(*, widget_key: WidgetKey) -> WidgetKey:
    if widget_key.revoked_at is None:
        widget_key.revoked_at = timezone.now()
        with tenant_scope(widget_key.tenant_id):
            widget_key.save(update_fields=["revoked_at"])
    return widget_key
