"""Staff views of billing: the price book and plans are edited here (admin runs unscoped)."""

from django.contrib import admin

from billing.models import (
    BudgetAlert,
    Invoice,
    InvoiceLine,
    PriceBookEntry,
    SpendCap,
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
    list_display = ["number", "tenant", "month", "status", "provider_total", "billed_total"]
    list_filter = ["status"]
    inlines = [InvoiceLineInline]

    def has_change_permission(self, request, obj=None):
        return False  # invoices are written by the month close only

    def has_delete_permission(self, request, obj=None):
        return False
