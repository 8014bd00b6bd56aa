"""Staff views of billing: the price book and plans are edited here (admin runs unscoped)."""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from billing import exports, services
from billing.models import (
    BudgetAlert,
    CreditNote,
    Invoice,
    InvoiceLine,
    IssuerProfile,
    PriceBookEntry,
    SpendCap,
    TenantBillingProfile,
    TenantPlan,
    UsageEvent,
)


@admin.register(PriceBookEntry)
class PriceBookEntryAdmin(admin.ModelAdmin):
    list_display = [
        "model", "effective_from", "text_in", "text_cached", "text_out", "audio_in",
        "audio_cached", "audio_out", "image_in", "image_cached", "per_minute",
    ]  # fmt: skip
    list_filter = ["model"]
    ordering = ["model", "-effective_from"]

    def get_readonly_fields(self, request, obj=None):
        # An entry in force has priced usage already: change prices by adding a later entry.
        if obj is not None:
            return [field.name for field in obj._meta.fields if field.name != "note"]
        return []


@admin.register(TenantPlan)
class TenantPlanAdmin(admin.ModelAdmin):
    list_display = ["tenant", "name", "markup_percent", "updated_at"]


@admin.register(SpendCap)
class SpendCapAdmin(admin.ModelAdmin):
    list_display = ["tenant", "agent", "widget_key", "daily_limit_usd", "updated_at"]
    raw_id_fields = ["agent", "widget_key"]


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    """What the budget alerts sent: read-only (the tenant's budget and its platform ceiling are
    on the tenant)."""

    list_display = ["tenant", "month", "threshold_percent", "budget_usd", "spend_usd",
                    "emailed_at", "webhooks_queued_at"]  # fmt: skip
    list_filter = ["threshold_percent"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    list_display = ["upstream_response_id", "tenant", "model", "provider", "status", "occurred_at"]
    list_filter = ["provider", "model", "status"]
    date_hierarchy = "occurred_at"

    def has_change_permission(self, request, obj=None):
        return False  # the ledger is append-only

    def has_delete_permission(self, request, obj=None):
        return False


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    """Staff's internal view: provider cost and margin next to what the customer is billed.

    Invoices are written by the month close only; staff change their status (paid, void) with
    the actions, each through a service that writes the tenant's audit log.
    """

    list_display = ["number", "tenant", "month", "status", "issue_date", "due_date",
                    "provider_total", "billed_total", "margin", "total"]  # fmt: skip
    list_filter = ["status"]
    search_fields = ["number", "tenant__name", "tenant__slug"]
    inlines = [InvoiceLineInline]
    actions = ["mark_paid", "void", "download_internal_csv"]

    @admin.display(description="Margin")
    def margin(self, obj: Invoice):
        return obj.billed_total - obj.provider_total

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Mark as paid (the balance after credit notes)")
    def mark_paid(self, request, queryset):
        for invoice in queryset.order_by("pk"):
            try:
                services.invoice_mark_paid(invoice_id=invoice.pk, actor=request.user)
                self.message_user(request, f"{invoice}: paid.", messages.SUCCESS)
            except services.InvoiceStateError as error:
                self.message_user(request, str(error), messages.ERROR)

    @admin.action(description="Void (nothing is owed on them any more)")
    def void(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        if "apply" not in request.POST or not reason:
            context = {
                **self.admin_site.each_context(request),
                "invoices": queryset,
                "opts": self.model._meta,
                "missing_reason": "apply" in request.POST,
            }
            return TemplateResponse(request, "admin/billing/invoice_void.html", context)
        for invoice in queryset.order_by("pk"):
            try:
                services.invoice_void(invoice_id=invoice.pk, actor=request.user, reason=reason)
                self.message_user(request, f"{invoice}: void.", messages.SUCCESS)
            except services.InvoiceStateError as error:
                self.message_user(request, str(error), messages.ERROR)
        return None

    @admin.action(description="Download the internal CSV (provider cost and margin)")
    def download_internal_csv(self, request, queryset):
        parts = []
        for index, invoice in enumerate(queryset.order_by("month", "pk")):
            lines = InvoiceLine.unscoped.filter(invoice=invoice).order_by("position")
            text = exports.invoice_csv_internal(invoice, lines)
            parts.append(text if index == 0 else text.split("\n", 1)[1])
        response = HttpResponse("".join(parts), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="invoices-internal.csv"'
        return response


class CreditNoteForm(forms.ModelForm):
    """A credit note is written by ``credit_note_issue`` (numbered, taxed, audit-logged)."""

    invoice_number = forms.CharField(help_text="The number of the invoice to correct.")
    amount = forms.DecimalField(
        max_digits=12, decimal_places=2, min_value=Decimal("0.01"), help_text="Before tax, USD."
    )

    class Meta:
        model = CreditNote
        fields = ["reason"]


@admin.register(CreditNote)
class CreditNoteAdmin(admin.ModelAdmin):
    list_display = ["number", "tenant", "invoice", "issue_date", "subtotal", "tax_total", "total"]
    search_fields = ["number", "invoice__number", "tenant__slug"]
    form = CreditNoteForm

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in CreditNote._meta.fields] if obj is not None else []

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["invoice_number", "amount", "reason"]
        return [field.name for field in CreditNote._meta.fields]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        invoice = Invoice.unscoped.filter(number=form.cleaned_data["invoice_number"]).first()
        if invoice is None:
            raise ValidationError("No invoice has that number.")
        note = services.credit_note_issue(
            invoice_id=invoice.pk,
            subtotal=form.cleaned_data["amount"],
            reason=form.cleaned_data["reason"],
            actor=request.user,
        )
        obj.pk = note.pk

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except (services.InvoiceStateError, ValidationError) as error:
            self.message_user(request, "; ".join(getattr(error, "messages", [str(error)])),
                              messages.ERROR)  # fmt: skip
            return HttpResponseRedirect(request.path)


@admin.register(IssuerProfile)
class IssuerProfileAdmin(admin.ModelAdmin):
    """The platform operator as seller. Issued documents keep the details they were issued
    with; a change applies from the next one on."""

    list_display = ["legal_name", "tax_id", "invoice_prefix", "credit_note_prefix", "updated_at"]

    def has_add_permission(self, request):
        # One issuer: the first close creates it from VP_ISSUER_*; staff edit that row.
        return not IssuerProfile.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TenantBillingProfile)
class TenantBillingProfileAdmin(admin.ModelAdmin):
    list_display = ["tenant", "legal_name", "tax_id", "tax_mode", "tax_rate_percent",
                    "payment_terms_days"]  # fmt: skip

    def save_model(self, request, obj, form, change):
        """Through the service, so that staff's changes (terms, tax) are in the tenant's audit
        log like the tenant's own."""
        saved = services.billing_profile_update(
            tenant_id=obj.tenant_id,
            actor=request.user,
            fields={
                name: form.cleaned_data[name] for name in form.changed_data if name != "tenant"
            },
        )
        obj.pk = saved.pk
