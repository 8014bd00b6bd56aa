from __future__ import annotations

import secrets
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from tenants import crypto
from tenants.scoping import TenantOwnedModel


def new_signing_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def mask_signing_secret(secret: str) -> str:
    return f"whsec_…{secret[-4:]}"


# Retention windows: at least a day (a session's last records and its post-call work may land
# minutes after it ends), at most a hundred years (past that, leave the field empty).
RETENTION_MIN_DAYS = 1
RETENTION_MAX_DAYS = 36500
RETENTION_FIELDS = (
    "retention_transcript_days",
    "retention_recording_days",
    "retention_analysis_days",
)


class DataPolicy(models.TextChoices):
    KEEP = "keep", "Keep everything"
    REDACT = "redact", "Redact personal data"
    METADATA = "metadata", "Keep metadata only"


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    max_concurrent_sessions = models.PositiveIntegerField(default=10)
    monthly_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Spend cap per calendar month in billed USD; empty means no cap of the "
        "tenant's own (the ceiling, if any, still applies). Owners and finance members set it "
        "in the console, up to the ceiling.",
    )
    # The platform's limit on the monthly budget (staff set it in the admin): owners and finance
    # members choose their budget up to it, and with no budget of their own it is the cap.
    monthly_budget_ceiling_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="The highest monthly budget (billed USD) the tenant may set; empty: no limit.",
    )
    max_session_minutes = models.PositiveIntegerField(default=60)
    # The public widget's key and Origin are no authentication outside a browser: widget
    # sessions may take only this share of the concurrency limit, so that whoever floods the
    # widget cannot take the slots of the tenant's own backend and phone lines.
    widget_share_percent = models.PositiveSmallIntegerField(
        default=80,
        help_text="Share of the concurrent sessions widget sessions may take (at least one).",
    )

    # Recording of sessions' audio: each agent decides (per_agent), or the tenant overrides
    # every agent (always: e.g. a regulated line; never: e.g. no consent can be collected).
    class RecordingPolicy(models.TextChoices):
        PER_AGENT = "per_agent", "Each agent decides"
        ALWAYS = "always", "Record every session"
        NEVER = "never", "Never record"

    recording_policy = models.CharField(
        max_length=10, choices=RecordingPolicy.choices, default=RecordingPolicy.PER_AGENT
    )
    # The secret that signs the platform's calls to the tenant's tool webhooks (HMAC-SHA256),
    # encrypted like every credential. After a rotation the previous one stays valid (calls are
    # signed with both) until ``webhook_secret_previous_until``. Shown once: to the first
    # configuring member who opens Credentials, then after each rotation.
    webhook_secret_encrypted = models.TextField(blank=True)
    webhook_secret_masked = models.CharField(max_length=20, blank=True)
    webhook_secret_previous_encrypted = models.TextField(blank=True)
    webhook_secret_previous_until = models.DateTimeField(null=True, blank=True)
    webhook_secret_shown = models.BooleanField(default=False)
    # Retention (agents/retention.py): days after a session ends that its content is kept;
    # empty keeps it forever. The session rows and the usage ledger stay whatever these say.
    retention_transcript_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(RETENTION_MIN_DAYS), MaxValueValidator(RETENTION_MAX_DAYS)],
        help_text="Days to keep transcripts and summaries after a session ends; empty: forever.",
    )
    retention_recording_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(RETENTION_MIN_DAYS), MaxValueValidator(RETENTION_MAX_DAYS)],
        help_text="Days to keep recordings after a session ends; empty: forever.",
    )
    retention_analysis_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(RETENTION_MIN_DAYS), MaxValueValidator(RETENTION_MAX_DAYS)],
        help_text="Days to keep post-call analysis after a session ends; empty: forever.",
    )
    # What of a conversation is stored and sent on (transcripts, summaries, the live view,
    # analysis, webhook payloads): the rule lives in agents/privacy.py. The upstream model
    # always hears the caller as they are.
    data_policy = models.CharField(
        max_length=16,
        choices=DataPolicy.choices,
        default=DataPolicy.KEEP,
        help_text="What of a conversation's content is stored and sent on.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if not self.webhook_secret_encrypted:  # every tenant has a signing secret
            secret = new_signing_secret()
            self.webhook_secret_encrypted = crypto.encrypt(secret)
            self.webhook_secret_masked = mask_signing_secret(secret)
        super().save(*args, **kwargs)

    @property
    def webhook_signing_secret(self) -> str:
        """The current signing secret (decrypted)."""
        return crypto.decrypt(self.webhook_secret_encrypted)

    def webhook_signing_secrets(self, *, now: datetime | None = None) -> tuple[str, ...]:
        """Every secret a call is signed with now: the current one, and the previous one
        during the overlap after a rotation."""
        secrets_ = [self.webhook_signing_secret]
        until = self.webhook_secret_previous_until
        if self.webhook_secret_previous_encrypted and until is not None:
            if until > (now or timezone.now()):
                secrets_.append(crypto.decrypt(self.webhook_secret_previous_encrypted))
        return tuple(secrets_)

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def widget_session_limit(self) -> int:
        return max(1, self.max_concurrent_sessions * min(self.widget_share_percent, 100) // 100)

    @property
    def has_budget(self) -> bool:
        return self.effective_monthly_budget_usd is not None

    @property
    def effective_monthly_budget_usd(self) -> Decimal | None:
        """The monthly cap in force: the tenant's budget, never above the platform's ceiling
        (which is the cap when the tenant set none). None: no cap at all."""
        amounts = [
            amount
            for amount in (self.monthly_budget_usd, self.monthly_budget_ceiling_usd)
            if amount is not None
        ]
        return min(amounts) if amounts else None


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    FINANCE = "finance", "Finance"
    VIEWER = "viewer", "Viewer"


CONFIGURE_ROLES = frozenset({Role.OWNER, Role.ADMIN})
FINANCE_ROLES = frozenset({Role.OWNER, Role.FINANCE})


class Membership(TenantOwnedModel):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in tenant {self.tenant_id} as {self.role}"

    @property
    def can_configure(self) -> bool:
        return self.role in CONFIGURE_ROLES

    @property
    def can_see_finance(self) -> bool:
        return self.role in FINANCE_ROLES


class ProviderCredential(TenantOwnedModel):
    """A tenant's own provider key, encrypted at rest (see ``tenants.crypto``)."""

    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI"

    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.OPENAI)
    encrypted_secret = models.TextField()
    masked = models.CharField(max_length=32, help_text="Display form, e.g. sk-…abcd")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "provider"], name="provider_credential_unique_provider"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} key {self.masked}"

    __repr__ = __str__


API_KEY_SCOPES = ("realtime", "read", "write")


def api_key_default_scopes() -> list[str]:
    return list(API_KEY_SCOPES)


class ApiKey(TenantOwnedModel):
    """A platform key for a tenant's backend: only a SHA-256 hash and a visible prefix are kept."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=20, help_text="First characters, shown to recognise it")
    hashed_key = models.CharField(max_length=64, unique=True)
    default_agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # What the key may do: open realtime sessions and mint client secrets ("realtime"), read
    # the REST API ("read"), change things through it ("write"). Keys issued before scopes
    # existed got all three.
    scopes = models.JSONField(default=api_key_default_scopes)

    class Meta:
        indexes = [models.Index(fields=["tenant", "created_at"], name="apikey_tenant_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    __repr__ = __str__

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @classmethod
    def agent_model(cls) -> type[models.Model]:
        """The agents app's Agent, as the foreign key names it: tenants is the bottom layer and
        imports no other app."""
        return cls._meta.get_field("default_agent").related_model


HEX_COLOUR = RegexValidator(r"^#[0-9a-fA-F]{6}$", "Enter a colour as #rrggbb.")


class WidgetPosition(models.TextChoices):
    BOTTOM_RIGHT = "bottom-right", "Bottom right"
    BOTTOM_LEFT = "bottom-left", "Bottom left"
    TOP_RIGHT = "top-right", "Top right"
    TOP_LEFT = "top-left", "Top left"


class WidgetLanguage(models.TextChoices):
    """The languages the widget's own messages are translated into (in its JS file)."""

    EN = "en", "English"
    FR = "fr", "Français"
    DE = "de", "Deutsch"
    ES = "es", "Español"


class WidgetKey(TenantOwnedModel):
    """A publishable key for the embeddable widget, bound to exact allowed origins.

    It also carries the widget's appearance, so the embed snippet stays one tag: the widget
    reads it from ``GET /widget/appearance`` when it mounts.
    """

    name = models.CharField(max_length=100)
    key = models.CharField(max_length=64, unique=True)
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # Sessions run this published version of the key's agent; empty: whichever version is live.
    version = models.ForeignKey(
        "agents.AgentVersion", null=True, blank=True, on_delete=models.RESTRICT, related_name="+"
    )
    allowed_origins = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    accent_colour = models.CharField(
        "accent colour", max_length=7, default="#0f766e", validators=[HEX_COLOUR],
        help_text="The button, the header and the user's lines.",
    )  # fmt: skip
    text_colour = models.CharField(
        "text colour", max_length=7, default="#ffffff", validators=[HEX_COLOUR],
        help_text="Text on the accent colour.",
    )  # fmt: skip
    position = models.CharField(
        max_length=16, choices=WidgetPosition.choices, default=WidgetPosition.BOTTOM_RIGHT
    )
    button_text = models.CharField(
        "button text", max_length=24, blank=True,
        help_text="Shown next to the microphone; empty for the round icon alone.",
    )  # fmt: skip
    language = models.CharField(
        "language of its messages", max_length=5, choices=WidgetLanguage.choices,
        default=WidgetLanguage.EN,
    )  # fmt: skip

    class Meta:
        indexes = [models.Index(fields=["tenant", "created_at"], name="widgetkey_tenant_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.key})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def appearance(self) -> dict:
        """What the widget applies when it mounts (and the console's live preview shows)."""
        return {
            "accent_colour": self.accent_colour,
            "text_colour": self.text_colour,
            "position": self.position,
            "button_text": self.button_text,
            "language": self.language,
        }


WIDGET_APPEARANCE_FIELDS = ("accent_colour", "text_colour", "position", "button_text", "language")


class WorkerHeartbeat(models.Model):
    """Last time each background process proved it was alive (beat → worker → this row)."""

    name = models.CharField(max_length=50, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.seen_at:%Y-%m-%d %H:%M:%S}"


class ClientToken(TenantOwnedModel):
    """A short-lived, single-use credential for one realtime socket (never stored in clear).

    Minted by ``POST /widget/session`` (bound to a widget key and the page's origin) or by
    ``POST /v1/realtime/client_secrets`` (an ephemeral key a tenant backend hands to a browser).
    """

    class Kind(models.TextChoices):
        WIDGET = "widget", "Widget session token"
        EPHEMERAL = "ephemeral", "Ephemeral client secret"
        CONSOLE = "console", "Console Try-it token"  # runs the agent's draft

    kind = models.CharField(max_length=10, choices=Kind.choices)
    hashed_token = models.CharField(max_length=64, unique=True)
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+")
    widget_key = models.ForeignKey(
        WidgetKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # The published version the socket runs (a pinned widget key, phone number or
    # ``?version=``); empty: the live one (a console token runs the draft).
    agent_version = models.ForeignKey(
        "agents.AgentVersion", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    origin = models.CharField(max_length=200, blank=True)
    end_user = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "expires_at"], name="clienttoken_tenant_expiry")]

    def __str__(self) -> str:
        return f"{self.kind} token for agent {self.agent_id}"


class AuditEvent(TenantOwnedModel):
    """Who changed what, and when. Append-only; written by the services that change things."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=60)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=40, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_created")]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type} {self.target_label}"


class Invitation(TenantOwnedModel):
    """An invitation link for a new member (shown in the console; no mail server needed)."""

    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    hashed_token = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "created_at"], name="invitation_tenant_created")]

    def __str__(self) -> str:
        return f"Invitation of {self.email} as {self.role}"


class TotpDevice(models.Model):
    """A member's optional second factor: a TOTP secret (RFC 6238, 30 s steps, 6 digits).

    The secret is encrypted like every credential (``tenants.crypto``). It counts once confirmed
    with a code; ``last_used_step`` makes every code single-use (no replay within its window).
    Written only by ``tenants.totp``.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="totp_device"
    )
    encrypted_secret = models.TextField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_used_step = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        state = "confirmed" if self.confirmed_at else "unconfirmed"
        return f"TOTP device of user {self.user_id} ({state})"

    __repr__ = __str__


class IdempotencyRecord(TenantOwnedModel):
    """The answer to a REST API POST sent with an ``Idempotency-Key``, kept 24 hours.

    One row per (API key, idempotency key): a retry with the same request gets the stored
    status and body back instead of acting twice; the same key with another request is refused.
    A row without a status is a request still running (a concurrent retry is told so).
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    body = models.BinaryField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_unique_key")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"idempotency {self.key} of key {self.api_key_id}"
