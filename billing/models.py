"""The usage ledger, the price book, plans, spend caps, daily tallies and invoices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import FileSystemStorage, Storage
from django.core.validators import (
    FileExtensionValidator,
    MaxValueValidator,
    MinValueValidator,
    RegexValidator,
)
from django.db import models
from django.db.models import Q

from billing import pricing
from tenants.scoping import TenantOwnedModel

MONEY = {"max_digits": 12, "decimal_places": 2}
RATE = {"max_digits": 12, "decimal_places": 6, "default": 0}


class UsageEvent(TenantOwnedModel):
    """One upstream ``response.done`` (or one metered audio span), exactly once.

    Append-only as far as usage goes. ``upstream_response_id`` is unique, so a redelivered event
    changes nothing. Cached tokens are a subset of the input tokens of the same modality, as the
    API reports them. Minute-metered models (transcribe, translate) carry ``audio_ms`` instead of
    tokens. Two bookkeeping fields are set later, once: ``tallied_at`` (folded into the daily
    tallies; only a hint of what is new, tallies are recomputed from all events of a day) and
    ``invoice`` (the invoice that billed it, so that a late event lands on the next invoice).
    """

    session = models.ForeignKey(
        "agents.Session", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    widget_key = models.ForeignKey(
        "tenants.WidgetKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Kind(models.TextChoices):
        REALTIME = "realtime", "Realtime"
        MINUTES = "minutes", "Metered audio"
        ANALYSIS = "analysis", "Post-call analysis"

    provider = models.CharField(max_length=10, default="openai")  # "local" costs nothing
    # What the usage was for: a realtime response (tokens), metered audio (transcription,
    # translation), or a post-call analysis (a Responses API call on a text model).
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.REALTIME)
    model = models.CharField(max_length=40)
    upstream_response_id = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=20, blank=True)
    input_text_tokens = models.PositiveIntegerField(default=0)
    input_audio_tokens = models.PositiveIntegerField(default=0)
    input_image_tokens = models.PositiveIntegerField(default=0)
    cached_text_tokens = models.PositiveIntegerField(default=0)
    cached_audio_tokens = models.PositiveIntegerField(default=0)
    cached_image_tokens = models.PositiveIntegerField(default=0)
    output_text_tokens = models.PositiveIntegerField(default=0)
    output_audio_tokens = models.PositiveIntegerField(default=0)
    audio_ms = models.PositiveBigIntegerField(default=0)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    tallied_at = models.DateTimeField(null=True, blank=True)
    invoice = models.ForeignKey(
        "billing.Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "occurred_at"], name="usage_tenant_occurred"),
            models.Index(fields=["tenant", "session"], name="usage_tenant_session"),
            models.Index(
                fields=["tenant", "occurred_at"],
                condition=Q(tallied_at__isnull=True),
                name="usage_untallied",
            ),
            models.Index(
                fields=["tenant", "occurred_at"],
                condition=Q(invoice__isnull=True),
                name="usage_uninvoiced",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.upstream_response_id}"

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens + self.input_image_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text_tokens + self.output_audio_tokens


class PriceBookEntry(models.Model):
    """The rates of a model from a day on, until the next entry of that model (platform-wide).

    Rates are US dollars per 1M tokens, and per minute for minute-metered models. To change a
    price, add an entry with a later ``effective_from``: usage is always priced by the entry in
    force on the (UTC) day it occurred, so past days keep their prices.
    """

    model = models.CharField(max_length=40)
    effective_from = models.DateField()
    text_in = models.DecimalField(**RATE)
    text_cached = models.DecimalField(**RATE)
    text_out = models.DecimalField(**RATE)
    audio_in = models.DecimalField(**RATE)
    audio_cached = models.DecimalField(**RATE)
    audio_out = models.DecimalField(**RATE)
    image_in = models.DecimalField(**RATE)
    image_cached = models.DecimalField(**RATE)
    per_minute = models.DecimalField(**RATE)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        verbose_name_plural = "price book entries"
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="price_book_unique_model_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"

    def clean(self) -> None:
        negative = [name for name in pricing.RATE_FIELDS if getattr(self, name, 0) < 0]
        if negative:
            raise ValidationError({name: "Rates cannot be negative." for name in negative})

    def rates(self) -> pricing.Rates:
        return pricing.Rates(**{name: getattr(self, name) for name in pricing.RATE_FIELDS})

    def version(self) -> pricing.PriceVersion:
        return pricing.PriceVersion(self.model, self.effective_from, self.rates(), self.pk)


class TenantPlan(TenantOwnedModel):
    """A tenant's commercial terms: a markup (positive) or a discount (negative) on provider cost.

    A tenant without a plan is billed at provider cost. Invoices copy the markup when issued.
    """

    name = models.CharField(max_length=100, default="Standard")
    markup_percent = models.DecimalField(
        max_digits=7,
        decimal_places=3,
        default=0,
        help_text="Percent added to provider cost; negative for a discount (-100 to 1000).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant"], name="tenant_plan_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.markup_percent:+}%)"

    def clean(self) -> None:
        if self.markup_percent is not None and not -100 <= self.markup_percent <= 1000:
            raise ValidationError({"markup_percent": "Between -100 and 1000."})


class SpendCap(TenantOwnedModel):
    """A daily spend cap (billed USD, UTC day) of one agent or one widget key."""

    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    widget_key = models.ForeignKey(
        "tenants.WidgetKey", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    daily_limit_usd = models.DecimalField(**MONEY)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(agent__isnull=False, widget_key__isnull=True)
                | Q(agent__isnull=True, widget_key__isnull=False),
                name="spend_cap_one_target",
            ),
            models.UniqueConstraint(
                fields=["tenant", "agent"], condition=Q(agent__isnull=False), name="spend_cap_agent"
            ),
            models.UniqueConstraint(
                fields=["tenant", "widget_key"],
                condition=Q(widget_key__isnull=False),
                name="spend_cap_widget_key",
            ),
        ]

    @classmethod
    def agent_model(cls) -> type[models.Model]:
        """The agents app's Agent, as the foreign key names it: billing sits below agents and
        does not import it."""
        return cls._meta.get_field("agent").related_model

    def __str__(self) -> str:
        target = f"agent {self.agent_id}" if self.agent_id else f"widget key {self.widget_key_id}"
        return f"${self.daily_limit_usd}/day for {target}"


class BillingLock(TenantOwnedModel):
    """One row per tenant and purpose, locked (``select_for_update``) to serialise its writers."""

    purpose = models.CharField(max_length=20)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "purpose"], name="billing_lock_unique")
        ]

    def __str__(self) -> str:
        return f"{self.purpose} lock of tenant {self.tenant_id}"


class UsageTally(TenantOwnedModel):
    """Daily totals per tenant, agent, model and provider: derived from UsageEvents, rebuildable.

    Holds quantities only; cost is computed on read with the price book, exactly.
    """

    day = models.DateField()
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=40)
    provider = models.CharField(max_length=10)
    responses = models.PositiveIntegerField(default=0)
    input_text_tokens = models.PositiveBigIntegerField(default=0)
    input_audio_tokens = models.PositiveBigIntegerField(default=0)
    input_image_tokens = models.PositiveBigIntegerField(default=0)
    cached_text_tokens = models.PositiveBigIntegerField(default=0)
    cached_audio_tokens = models.PositiveBigIntegerField(default=0)
    cached_image_tokens = models.PositiveBigIntegerField(default=0)
    output_text_tokens = models.PositiveBigIntegerField(default=0)
    output_audio_tokens = models.PositiveBigIntegerField(default=0)
    audio_ms = models.PositiveBigIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["tenant", "day"], name="tally_tenant_day")]
        verbose_name_plural = "usage tallies"

    def __str__(self) -> str:
        return f"{self.day} {self.model} agent {self.agent_id}"


class SessionCost(TenantOwnedModel):
    """A session's provider cost, derived from its UsageEvents by the tally (rebuildable).

    Stored, unlike the tallies' cost, because the session list sorts nothing by it but filters
    on it over thousands of sessions: a price-book computation per row cannot be a SQL filter.
    Written with the day tallies (``tally_recompute_day``), so the sweep keeps it right too.
    """

    session = models.OneToOneField("agents.Session", on_delete=models.CASCADE, related_name="cost")
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6)
    computed_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["tenant", "cost_usd"], name="session_cost_tenant_cost")]

    def __str__(self) -> str:
        return f"session {self.session_id}: ${self.cost_usd}"


def _logo_storage() -> Storage:
    """Issuer logos live under the data folder, never in the public static files."""
    return FileSystemStorage(location=str(settings.DATA_DIR / "billing"))


class IssuerProfile(models.Model):
    """The platform operator as the seller on invoices and credit notes (edited in the admin).

    One row in practice (``issuer_profile_get`` creates it from the ``VP_ISSUER_*`` settings).
    Invoices copy these details when issued, so changing them later changes no issued document.
    """

    legal_name = models.CharField(max_length=200)
    address = models.TextField(blank=True, help_text="Postal address, one part per line.")
    tax_id = models.CharField(max_length=50, blank=True, help_text="VAT or other tax number.")
    email = models.EmailField(blank=True)
    payment_details = models.TextField(
        blank=True, help_text="Bank account (IBAN, BIC) or other payment instructions."
    )
    logo = models.FileField(
        upload_to="logos/",
        storage=_logo_storage,
        blank=True,
        validators=[FileExtensionValidator(["png", "jpg", "jpeg"])],
        help_text="PNG or JPEG, printed at the top left of invoices.",
    )
    invoice_prefix = models.CharField(
        max_length=20,
        default="INV-",
        validators=[RegexValidator(r"^[A-Za-z0-9/_-]*$", "Letters, digits, - _ / only.")],
        help_text="Invoice numbers are this prefix and a gapless counter (INV-000001).",
    )
    credit_note_prefix = models.CharField(
        max_length=20,
        default="CN-",
        validators=[RegexValidator(r"^[A-Za-z0-9/_-]*$", "Letters, digits, - _ / only.")],
        help_text="Credit notes have their own gapless series (CN-000001).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.legal_name

    def snapshot(self) -> dict[str, str]:
        return {
            "legal_name": self.legal_name,
            "address": self.address,
            "tax_id": self.tax_id,
            "email": self.email,
            "payment_details": self.payment_details,
            "logo": self.logo.name if self.logo else "",
        }


class DocumentCounter(models.Model):
    """The last number given in one series of one issuer: locked (``select_for_update``) and
    moved in the transaction that issues the document, so numbers are gapless and unique."""

    class Series(models.TextChoices):
        INVOICE = "invoice", "Invoices"
        CREDIT_NOTE = "credit_note", "Credit notes"

    issuer = models.ForeignKey(IssuerProfile, on_delete=models.PROTECT, related_name="+")
    series = models.CharField(max_length=20, choices=Series.choices)
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "series"], name="document_counter_unique")
        ]

    def __str__(self) -> str:
        return f"{self.series} of {self.issuer_id}: {self.last_number}"


class TaxMode(models.TextChoices):
    RATE = "rate", "Tax at a rate"
    REVERSE_CHARGE = "reverse_charge", "Reverse charge"


class CurrencyDisplay(models.TextChoices):
    SYMBOL = "symbol", "$1,234.50"
    CODE = "code", "USD 1,234.50"


REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT is to be accounted for by the recipient (Article 196, Council "
    "Directive 2006/112/EC)."
)


class TenantBillingProfile(TenantOwnedModel):
    """Who a tenant's invoices are addressed to (owners and finance edit that in the console) and
    on which terms (payment terms and tax: platform staff, in the admin).

    Invoices copy it when issued. Amounts are always billed in US dollars; ``currency_display``
    only chooses how they are written.
    """

    legal_name = models.CharField(max_length=200, blank=True)
    address = models.TextField(blank=True)
    tax_id = models.CharField(max_length=50, blank=True)
    billing_email = models.EmailField(blank=True)
    currency_display = models.CharField(
        max_length=10, choices=CurrencyDisplay.choices, default=CurrencyDisplay.SYMBOL
    )
    payment_terms_days = models.PositiveSmallIntegerField(
        default=30, validators=[MaxValueValidator(365)]
    )
    tax_mode = models.CharField(max_length=20, choices=TaxMode.choices, default=TaxMode.RATE)
    tax_rate_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    tax_note = models.CharField(
        max_length=300,
        blank=True,
        help_text="Printed under the totals; reverse charge prints the legal note when empty.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="tenant_billing_profile_unique")
        ]

    def __str__(self) -> str:
        return f"billing profile of tenant {self.tenant_id}"

    def clean(self) -> None:
        if self.tax_mode == TaxMode.REVERSE_CHARGE and not self.tax_id:
            raise ValidationError({"tax_id": "Reverse charge needs the customer's tax ID."})


# What may still change on an issued invoice: its payment status, nothing else.
INVOICE_STATUS_FIELDS = frozenset({"status", "paid_at", "voided_at", "amount_paid"})


class Invoice(TenantOwnedModel):
    """A tenant's month, closed: a draft while its lines are written, then issued and immutable
    but for its status (open → paid, or open → void).

    Issued invoices carry a gapless number of their issuer's series, issue and due dates, and
    copies of the seller's and buyer's details and of the tax terms at the time of issue.
    ``billed_total`` is the subtotal (before tax); ``total`` is what is due.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        PAID = "paid", "Paid"
        VOID = "void", "Void"

    month = models.DateField(help_text="First day of the month billed.")
    # Invoices issued before numbering series kept their old numbers (SLUG-YYYY-MM).
    number = models.CharField(max_length=80, unique=True, null=True, blank=True)
    issuer = models.ForeignKey(
        IssuerProfile, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    sequence = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    plan_name = models.CharField(max_length=100, blank=True)
    markup_percent = models.DecimalField(max_digits=7, decimal_places=3, default=0)
    provider_total = models.DecimalField(**MONEY, default=0)
    billed_total = models.DecimalField(**MONEY, default=0)
    tax_mode = models.CharField(max_length=20, choices=TaxMode.choices, default=TaxMode.RATE)
    tax_rate_percent = models.DecimalField(max_digits=5, decimal_places=2, default=0)
    tax_note = models.CharField(max_length=300, blank=True)
    tax_total = models.DecimalField(**MONEY, default=0)
    total = models.DecimalField(**MONEY, default=0)
    currency_display = models.CharField(
        max_length=10, choices=CurrencyDisplay.choices, default=CurrencyDisplay.SYMBOL
    )
    seller = models.JSONField(default=dict, blank=True)
    buyer = models.JSONField(default=dict, blank=True)
    event_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    issue_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    amount_paid = models.DecimalField(**MONEY, default=0)
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-month"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "month"], name="invoice_unique_month"),
            models.UniqueConstraint(
                fields=["issuer", "sequence"],
                condition=Q(sequence__isnull=False),
                name="invoice_unique_sequence",
            ),
        ]

    def __str__(self) -> str:
        return self.number or f"draft of {self.month:%Y-%m}"

    @property
    def is_issued(self) -> bool:
        return self.status != self.Status.DRAFT

    @property
    def subtotal(self) -> Decimal:
        return self.billed_total

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            stored = Invoice.unscoped.filter(pk=self.pk).values_list("status", flat=True).first()
            update_fields = kwargs.get("update_fields")
            status_only = update_fields is not None and set(update_fields) <= INVOICE_STATUS_FIELDS
            if stored not in (None, self.Status.DRAFT) and not status_only:
                raise ValueError("issued invoices are immutable")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_issued:
            raise ValueError("issued invoices are immutable")
        return super().delete(*args, **kwargs)


class CreditNote(TenantOwnedModel):
    """A correction of an issued invoice: an amount (before tax) credited back, taxed on the
    invoice's terms, with its own gapless number series. Immutable once written."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    issuer = models.ForeignKey(IssuerProfile, on_delete=models.PROTECT, related_name="+")
    number = models.CharField(max_length=80, unique=True)
    sequence = models.PositiveIntegerField()
    issue_date = models.DateField()
    reason = models.CharField(max_length=300)
    subtotal = models.DecimalField(**MONEY)
    tax_total = models.DecimalField(**MONEY)
    total = models.DecimalField(**MONEY)
    seller = models.JSONField(default=dict, blank=True)
    buyer = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-issue_date", "-sequence"]
        constraints = [
            models.UniqueConstraint(fields=["issuer", "sequence"], name="credit_note_unique_seq")
        ]

    def __str__(self) -> str:
        return self.number

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("credit notes are immutable")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("credit notes are immutable")


class InvoiceLine(TenantOwnedModel):
    """Quantity × unit price of one agent, model, token type (and price version) on an invoice.

    ``amount`` is the provider cost and ``billed_amount`` the same under the plan's markup, each
    rounded half-up to the cent from the exact value. Adjustment lines bill usage of an earlier
    month (``usage_month``) that was recorded after that month's invoice was issued.
    """

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    is_adjustment = models.BooleanField(default=False)
    is_analysis = models.BooleanField(default=False)  # post-call analysis, not conversation
    usage_month = models.DateField()
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent_name = models.CharField(max_length=100)
    model = models.CharField(max_length=40)
    provider = models.CharField(max_length=10)
    token_type = models.CharField(max_length=20)
    description = models.CharField(max_length=200)
    quantity = models.DecimalField(max_digits=20, decimal_places=3)
    quantity_unit = models.CharField(max_length=10)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6)
    price_unit = models.CharField(max_length=12)
    price_effective_from = models.DateField(null=True, blank=True)
    amount = models.DecimalField(**MONEY)
    billed_amount = models.DecimalField(**MONEY)

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "position"], name="invoice_line_position")
        ]

    def __str__(self) -> str:
        return self.description

    def save(self, *args: Any, **kwargs: Any) -> None:
        status = Invoice.unscoped.filter(pk=self.invoice_id).values_list("status", flat=True)
        if status.first() not in (None, Invoice.Status.DRAFT):
            raise ValueError("issued invoices are immutable")
        super().save(*args, **kwargs)

    @property
    def customer_unit_price(self) -> Decimal:
        """The unit price the customer pays: the provider's under the invoice's markup, exact
        (quantity × it, rounded half-up, is ``billed_amount``)."""
        return pricing.with_markup(self.unit_price, self.invoice.markup_percent).normalize()


class BudgetAlert(TenantOwnedModel):
    """One threshold (50, 80 or 100 % of the monthly budget) crossed in one month: a row, once.

    The unique (tenant, month, threshold) makes "once per threshold per month" the database's
    promise: concurrent checks both try the insert, one wins, the other gets an IntegrityError
    and sends nothing. What was sent is recorded on the row: ``emailed_at`` is claimed by one
    conditional UPDATE before the mail goes out (and released if sending fails, so that the next
    check tries again), ``webhooks_queued_at`` once the tenant's webhook deliveries exist (those
    are keyed per endpoint and event, so queueing twice sends once).
    """

    THRESHOLDS = (50, 80, 100)

    month = models.DateField(help_text="First day of the month.")
    threshold_percent = models.PositiveSmallIntegerField()
    budget_usd = models.DecimalField(**MONEY)  # the budget in force when it was crossed
    spend_usd = models.DecimalField(**MONEY)  # billed month-to-date spend, to the cent
    created_at = models.DateTimeField(auto_now_add=True)
    email_recipients = models.JSONField(default=list, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    webhooks_queued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-month", "threshold_percent"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "month", "threshold_percent"], name="budget_alert_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.threshold_percent}% of ${self.budget_usd} in {self.month:%Y-%m}"
