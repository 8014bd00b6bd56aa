"""Platform staff manage tenants and their limits here.

Admin requests run with tenant scoping disabled (``tenants.middleware``): staff see every
tenant's rows.
"""

from django.contrib import admin

from tenants.models import ApiKey, Membership, ProviderCredential, Tenant, WidgetKey


class MembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "tenant"
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = [
        "name", "slug", "status", "max_concurrent_sessions", "monthly_budget_usd",
        "monthly_budget_ceiling_usd",
    ]  # fmt: skip
    list_filter = ["status"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]
    # The signing secret is the tenant's to see (once) and rotate, in the console.
    exclude = [
        "webhook_secret_encrypted", "webhook_secret_previous_encrypted",
        "webhook_secret_previous_until", "webhook_secret_shown",
    ]  # fmt: skip
    readonly_fields = ["webhook_secret_masked"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role"]
    list_filter = ["role"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "tenant", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "hashed_key", "last_used_at"]


@admin.register(WidgetKey)
class WidgetKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "key", "tenant", "revoked_at"]


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(admin.ModelAdmin):
    list_display = ["tenant", "provider", "masked", "updated_at"]
    exclude = ["encrypted_secret"]
    readonly_fields = ["masked"]
