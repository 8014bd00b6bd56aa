"""Writes for tenants, members and credentials. One write path per model."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from tenants import crypto, totp
from tenants.audit import audit_record
from tenants.models import (
    API_KEY_SCOPES,
    RETENTION_FIELDS,
    RETENTION_MAX_DAYS,
    RETENTION_MIN_DAYS,
    WIDGET_APPEARANCE_FIELDS,
    ApiKey,
    Invitation,
    Membership,
    ProviderCredential,
    Role,
    Tenant,
    WidgetKey,
    mask_signing_secret,
    new_signing_secret,
)
from tenants.origins import origin_normalize
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.signals import key_revoked

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


@transaction.atomic
def membership_set(
    *, tenant: Tenant, user: AbstractBaseUser, role: str, actor: AbstractBaseUser | None = None
) -> Membership:
    """Add a member or change a role; the last owner cannot stop being one."""
    if role not in Role.values:
        raise ServiceError(f"unknown role {role!r}")
    with tenant_scope(tenant):
        current = Membership.objects.select_for_update().filter(user=user).first()
        _check_role_change(
            actor=actor, target=user, before=current.role if current else None, after=role
        )
        if current is not None and current.role == Role.OWNER and role != Role.OWNER:
            _ensure_another_owner(tenant, user)
        membership, created = Membership.objects.update_or_create(
            tenant=tenant, user=user, defaults={"role": role}
        )
        audit_record(
            tenant=tenant,
            actor=actor,
            action="member.added" if created else "member.role_changed",
            target=membership,
            target_label=user.get_username(),
            changes={"role": role, **({"from": current.role} if current else {})},
        )
    return membership


def _check_role_change(
    *,
    actor: AbstractBaseUser | None,
    target: AbstractBaseUser | None,
    before: str | None,
    after: str | None,
) -> None:
    """Only owners grant, change or remove owner; nobody but an owner changes his own role.

    ``before``/``after``: the target's role before and after (None: not a member, removed).
    Called inside the tenant's scope; ``actor`` None is the platform itself (commands, staff).
    """
    if actor is None:
        return
    actor_role = Membership.objects.filter(user=actor).values_list("role", flat=True).first()
    if actor_role == Role.OWNER:
        return
    if after == Role.OWNER or before == Role.OWNER:
        raise ServiceError("Only an owner can grant, change or remove the owner role.")
    if target is not None and target.pk == actor.pk and after is not None:
        raise ServiceError("You cannot change your own role; ask an owner.")


def _ensure_another_owner(tenant: Tenant, user: AbstractBaseUser) -> None:
    others = Membership.objects.filter(role=Role.OWNER).exclude(user=user).count()
    if others == 0:
        raise ServiceError("A tenant needs at least one owner: make someone else owner first.")


@transaction.atomic
def membership_remove(*, membership: Membership, actor: AbstractBaseUser | None = None) -> None:
    with tenant_scope(membership.tenant_id):
        _check_role_change(actor=actor, target=membership.user, before=membership.role, after=None)
        if membership.role == Role.OWNER:
            _ensure_another_owner(membership.tenant, membership.user)
        username = membership.user.get_username()
        audit_record(
            tenant=membership.tenant_id,
            actor=actor,
            action="member.removed",
            target_type="membership",
            target_label=username,
            changes={"role": membership.role},
        )
        membership.delete()


def provider_credential_set(
    *,
    tenant: Tenant,
    secret: str,
    provider: str = ProviderCredential.Provider.OPENAI,
    actor: AbstractBaseUser | None = None,
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
        audit_record(
            tenant=tenant, actor=actor, action="credential.set", target=credential,
            changes={"masked": credential.masked},
        )  # fmt: skip
    return credential


def credentials_rotate() -> int:
    """Re-encrypt the tenants' provider keys under the first configured key; the row count.

    Each row is rotated in its own transaction, so an interrupted run can simply be re-run
    (the agents app rotates its own secrets: ``agents.services.agent_secrets_rotate``).
    """
    count = 0
    with scopes_disabled():
        for credential_id in ProviderCredential.objects.values_list("pk", flat=True):
            with transaction.atomic():
                credential = ProviderCredential.objects.select_for_update().get(pk=credential_id)
                credential.encrypted_secret = crypto.rotate(credential.encrypted_secret)
                credential.save(update_fields=["encrypted_secret", "updated_at"])
            count += 1
    for tenant_id in Tenant.objects.values_list("pk", flat=True):
        with transaction.atomic():
            tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
            tenant.webhook_secret_encrypted = crypto.rotate(tenant.webhook_secret_encrypted)
            if tenant.webhook_secret_previous_encrypted:
                tenant.webhook_secret_previous_encrypted = crypto.rotate(
                    tenant.webhook_secret_previous_encrypted
                )
            tenant.save(
                update_fields=["webhook_secret_encrypted", "webhook_secret_previous_encrypted"]
            )
        count += 1
    count += totp.secrets_rotate()  # members' second-factor secrets
    return count


def webhook_secret_rotate(*, tenant: Tenant, actor: AbstractBaseUser | None = None) -> str:
    """A new webhook signing secret, returned once. The previous one stays valid (calls are
    signed with both) for ``VP_WEBHOOK_SECRET_OVERLAP_HOURS``, while receivers switch."""
    secret = new_signing_secret()
    overlap = timedelta(hours=settings.VP_WEBHOOK_SECRET_OVERLAP_HOURS)
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        locked.webhook_secret_previous_encrypted = locked.webhook_secret_encrypted
        locked.webhook_secret_previous_until = timezone.now() + overlap
        locked.webhook_secret_encrypted = crypto.encrypt(secret)
        locked.webhook_secret_masked = mask_signing_secret(secret)
        locked.webhook_secret_shown = True  # shown now, by the caller, once
        locked.save(
            update_fields=[
                "webhook_secret_previous_encrypted", "webhook_secret_previous_until",
                "webhook_secret_encrypted", "webhook_secret_masked", "webhook_secret_shown",
            ]
        )  # fmt: skip
        audit_record(
            tenant=tenant, actor=actor, action="webhook_secret.rotated",
            changes={"masked": locked.webhook_secret_masked, "previous_valid_until":
                     locked.webhook_secret_previous_until.isoformat()},
        )  # fmt: skip
    return secret


def webhook_secret_first_view(*, tenant: Tenant) -> str | None:
    """The signing secret if it was never shown (a new tenant's first look), else None: once."""
    flipped = Tenant.objects.filter(pk=tenant.pk, webhook_secret_shown=False).update(
        webhook_secret_shown=True
    )
    if not flipped:
        return None
    return Tenant.objects.get(pk=tenant.pk).webhook_signing_secret


def _hash_key(raw_key: str) -> str:
    # API keys carry 256 bits of randomness, so a fast unsalted hash is enough to make a leaked
    # table useless, and it lets the key be found by an indexed lookup.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_issue(
    *,
    tenant: Tenant,
    name: str,
    default_agent: object | None = None,
    actor: AbstractBaseUser | None = None,
    scopes: Iterable[str] = API_KEY_SCOPES,
) -> tuple[ApiKey, str]:
    """Create a platform API key. The raw key is returned once and never stored.

    ``scopes``: what it may do (``realtime``, ``read``, ``write``); at least one."""
    chosen = [scope for scope in API_KEY_SCOPES if scope in set(scopes)]
    unknown = set(scopes) - set(API_KEY_SCOPES)
    if unknown or not chosen:
        raise ServiceError(f"scopes must be among {', '.join(API_KEY_SCOPES)} (at least one)")
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    with tenant_scope(tenant):
        api_key = ApiKey.objects.create(
            tenant=tenant,
            name=name or "API key",
            prefix=raw_key[: len(API_KEY_PREFIX) + 6],
            hashed_key=_hash_key(raw_key),
            default_agent=default_agent,
            scopes=chosen,
        )
        audit_record(
            tenant=tenant, actor=actor, action="api_key.issued", target=api_key,
            changes={"scopes": chosen},
        )  # fmt: skip
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey, actor: AbstractBaseUser | None = None) -> ApiKey:
    """Revoke the key: it, every client secret it minted and every live session that came in
    with them stop working (the sessions end through the ``key_revoked`` signal)."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        with tenant_scope(api_key.tenant_id):
            api_key.save(update_fields=["revoked_at"])
            audit_record(
                tenant=api_key.tenant_id, actor=actor, action="api_key.revoked", target=api_key
            )
        _announce_revocation(api_key, actor)
    return api_key


def _announce_revocation(key: ApiKey | WidgetKey, actor: AbstractBaseUser | None) -> None:
    transaction.on_commit(lambda: key_revoked.send(sender=type(key), key=key, actor=actor))


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


def widget_key_version(*, tenant_id: int, agent: object | None, number: int | None) -> object:
    """The published version of the key's agent numbered ``number`` (None: follow the live
    version), or ``ServiceError``. The model is reached through the field: tenants imports
    nothing of agents."""
    if number is None:
        return None
    if agent is None:
        raise ServiceError("Choose an agent to pin one of its versions.")
    versions = WidgetKey._meta.get_field("version").related_model
    with tenant_scope(tenant_id):
        version = versions.objects.filter(agent=agent, number=number).first()
    if version is None:
        raise ServiceError(f"{agent} has no version {number}.")
    return version


def widget_key_create(
    *,
    tenant: Tenant,
    name: str,
    allowed_origins: list[str],
    agent: object | None = None,
    actor: AbstractBaseUser | None = None,
    version_number: int | None = None,
) -> WidgetKey:
    """A new widget key; ``version_number`` pins its sessions to that published version of
    its agent (``ServiceError`` when the agent has no such version)."""
    version = widget_key_version(tenant_id=tenant.pk, agent=agent, number=version_number)
    with tenant_scope(tenant):
        widget_key = WidgetKey.objects.create(
            tenant=tenant,
            name=name,
            key=WIDGET_KEY_PREFIX + secrets.token_urlsafe(18),
            allowed_origins=origins_clean(allowed_origins),
            agent=agent,
            version=version,
        )
        audit_record(
            tenant=tenant, actor=actor, action="widget_key.created", target=widget_key,
            changes={"allowed_origins": widget_key.allowed_origins,
                     "version": version_number or "live"},
        )  # fmt: skip
    return widget_key


def widget_key_pin(
    *, widget_key: WidgetKey, version_number: int | None, actor: AbstractBaseUser | None = None
) -> WidgetKey:
    """Pin the key's sessions to a published version of its agent, or (None) to the live one."""
    version = widget_key_version(
        tenant_id=widget_key.tenant_id, agent=widget_key.agent, number=version_number
    )
    with tenant_scope(widget_key.tenant_id):
        before = widget_key.version.number if widget_key.version else "live"
        widget_key.version = version
        widget_key.save(update_fields=["version"])
        audit_record(
            tenant=widget_key.tenant_id, actor=actor, action="widget_key.version_pinned",
            target=widget_key, changes={"from": before, "to": version_number or "live"},
        )  # fmt: skip
    return widget_key


def widget_key_update_origins(
    *, widget_key: WidgetKey, allowed_origins: list[str], actor: AbstractBaseUser | None = None
) -> WidgetKey:
    with tenant_scope(widget_key.tenant_id):
        before = widget_key.allowed_origins
        widget_key.allowed_origins = origins_clean(allowed_origins)
        widget_key.save(update_fields=["allowed_origins"])
        audit_record(
            tenant=widget_key.tenant_id, actor=actor, action="widget_key.origins_changed",
            target=widget_key, changes={"from": before, "to": widget_key.allowed_origins},
        )  # fmt: skip
    return widget_key


def widget_key_set_appearance(
    *, widget_key: WidgetKey, appearance: dict[str, str], actor: AbstractBaseUser | None = None
) -> bool:
    """Change the widget's look (values already validated by the form's model fields); audited
    with each changed field's before and after. False when nothing changed."""
    changes = {
        name: {"from": getattr(widget_key, name), "to": value}
        for name, value in appearance.items()
        if name in WIDGET_APPEARANCE_FIELDS and getattr(widget_key, name) != value
    }
    if not changes:
        return False
    with tenant_scope(widget_key.tenant_id):
        for name, change in changes.items():
            setattr(widget_key, name, change["to"])
        widget_key.full_clean(exclude=["tenant", "agent", "allowed_origins", "key", "name"])
        widget_key.save(update_fields=list(changes))
        audit_record(
            tenant=widget_key.tenant_id, actor=actor, action="widget_key.appearance_changed",
            target=widget_key, changes=changes,
        )  # fmt: skip
    return True


def widget_key_revoke(*, widget_key: WidgetKey, actor: AbstractBaseUser | None = None) -> WidgetKey:
    if widget_key.revoked_at is None:
        widget_key.revoked_at = timezone.now()
        with tenant_scope(widget_key.tenant_id):
            widget_key.save(update_fields=["revoked_at"])
            audit_record(
                tenant=widget_key.tenant_id, actor=actor, action="widget_key.revoked",
                target=widget_key,
            )  # fmt: skip
        _announce_revocation(widget_key, actor)
    return widget_key


INVITATION_DAYS = 7
INVITATION_PREFIX = "vp_inv_"


def invitation_create(
    *, tenant: Tenant, email: str, role: str, actor: AbstractBaseUser | None
) -> tuple[object, str]:
    """An invitation link token (returned once; only its hash is stored)."""
    if role not in Role.values:
        raise ServiceError(f"unknown role {role!r}")
    with tenant_scope(tenant):
        _check_role_change(actor=actor, target=None, before=None, after=role)
    raw = INVITATION_PREFIX + secrets.token_urlsafe(24)
    with tenant_scope(tenant):
        invitation = Invitation.objects.create(
            tenant=tenant,
            email=email.strip().lower(),
            role=role,
            hashed_token=_hash_key(raw),
            invited_by=actor if actor is not None and actor.is_authenticated else None,
            expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
        )
        audit_record(
            tenant=tenant, actor=actor, action="member.invited", target=invitation,
            target_label=invitation.email, changes={"role": role},
        )  # fmt: skip
    return invitation, raw


def invitation_token_hash(raw: str) -> str:
    """What the platform keeps of an invitation token: the database and the accepting browser's
    session hold this hash, never the token."""
    return _hash_key(raw.strip())


def invitation_revoke(*, invitation: Invitation, actor: AbstractBaseUser | None) -> None:
    """Withdraw a pending invitation: the row goes, so its link finds nothing any more (the
    same "not valid" page as a wrong link). Audited with who was invited and as what."""
    with tenant_scope(invitation.tenant_id):
        if invitation.accepted_at is not None:
            raise ServiceError("This invitation was already accepted.")
        audit_record(
            tenant=invitation.tenant_id, actor=actor, action="member.invitation_revoked",
            target=invitation, target_label=invitation.email,
            changes={"email": invitation.email, "role": invitation.role},
        )  # fmt: skip
        invitation.delete()


def invitation_find(*, hashed_token: str):
    """The pending, unexpired invitation for a token's hash, or None."""
    with scopes_disabled():
        return (
            Invitation.objects.select_related("tenant")
            .filter(
                hashed_token=hashed_token,
                accepted_at__isnull=True,
                expires_at__gt=timezone.now(),
            )
            .first()
        )


@transaction.atomic
def invitation_accept(*, hashed_token: str, user: AbstractBaseUser) -> Membership:
    """Join the tenant with the invited role (once)."""
    invitation = invitation_find(hashed_token=hashed_token)
    if invitation is None:
        raise ServiceError("This invitation link is invalid, used or expired.")
    with scopes_disabled():
        claimed = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
            accepted_at=timezone.now()
        )
    if claimed != 1:
        raise ServiceError("This invitation link is invalid, used or expired.")
    with tenant_scope(invitation.tenant):
        existing = Membership.objects.filter(user=user).first()
        if existing is not None:
            return existing
        membership = Membership.objects.create(
            tenant=invitation.tenant, user=user, role=invitation.role
        )
        audit_record(
            tenant=invitation.tenant, actor=user, action="member.joined", target=membership,
            target_label=user.get_username(), changes={"role": invitation.role},
        )  # fmt: skip
    return membership


def tenant_retention_set(
    *, tenant: Tenant, days: dict[str, int | None], actor: AbstractBaseUser | None = None
) -> Tenant:
    """Set the tenant's retention windows (``RETENTION_FIELDS``; None keeps forever); the
    changes are audited. The next retention sweep applies them."""
    unknown = set(days) - set(RETENTION_FIELDS)
    if unknown:
        raise ServiceError(f"unknown retention windows: {', '.join(sorted(unknown))}")
    for value in days.values():
        if value is not None and not RETENTION_MIN_DAYS <= value <= RETENTION_MAX_DAYS:
            raise ServiceError(
                f"a retention window is {RETENTION_MIN_DAYS} to {RETENTION_MAX_DAYS} days"
            )
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        changes = {
            name: {"from": getattr(locked, name), "to": value}
            for name, value in days.items()
            if getattr(locked, name) != value
        }
        if changes:
            for name, value in days.items():
                setattr(locked, name, value)
            locked.save(update_fields=list(days))
            audit_record(
                tenant=locked, actor=actor, action="tenant.retention_changed", target=locked,
                changes=changes,
            )  # fmt: skip
    return locked


def _tenant_choice_set(
    *, tenant: Tenant, field: str, value: str, action: str, actor: AbstractBaseUser | None
) -> bool:
    """Set one of the tenant's choice fields, audited (``action``); False when unchanged."""
    allowed = Tenant._meta.get_field(field).choices or ()
    if value not in {choice for choice, _ in allowed}:
        raise ServiceError(f"unknown {field.replace('_', ' ')} {value!r}")
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        previous = getattr(locked, field)
        if previous == value:
            return False
        setattr(locked, field, value)
        locked.save(update_fields=[field])
        audit_record(tenant=tenant, actor=actor, action=action, changes={field: [previous, value]})
    setattr(tenant, field, value)
    return True


def tenant_recording_policy_set(
    *, tenant: Tenant, policy: str, actor: AbstractBaseUser | None = None
) -> bool:
    """Record sessions as each agent says, always, or never (the tenant-wide override);
    audited. Sessions starting from now follow it. False when nothing changed."""
    return _tenant_choice_set(
        tenant=tenant, field="recording_policy", value=policy,
        action="tenant.recording_policy_changed", actor=actor,
    )  # fmt: skip


def tenant_data_policy_set(
    *, tenant: Tenant, policy: str, actor: AbstractBaseUser | None = None
) -> bool:
    """Set what of a conversation is stored and sent on; audited. Sessions starting from now
    follow it (a live one keeps the policy it started with). False when nothing changed."""
    return _tenant_choice_set(
        tenant=tenant, field="data_policy", value=policy,
        action="tenant.data_policy_changed", actor=actor,
    )  # fmt: skip
