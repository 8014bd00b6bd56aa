"""Platform staff manage tenants and their limits here; tenant rows are read unscoped."""

from django.contrib import admin

from tenants.models import ApiKey, Membership, ProviderCredential, Tenant, WidgetKey


class UnscopedAdmin(admin.ModelAdmin):
    """Staff see every tenant's rows: the explicit bypass of the scoped manager."""

    def get_queryset(self, request):
        return self.model.unscoped.get_queryset()


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]

    def get_queryset(self, request):
        return Membership.unscoped.get_queryset()


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "max_concurrent_sessions", "monthly_budget_usd"]
    list_filter = ["status"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(UnscopedAdmin):
    list_display = ["user", "tenant", "role"]
    list_filter = ["role"]


@admin.register(ApiKey)
class ApiKeyAdmin(UnscopedAdmin):
    list_display = ["name", "prefix", "tenant", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "hashed_key", "last_used_at"]


@admin.register(WidgetKey)
class WidgetKeyAdmin(UnscopedAdmin):
    list_display = ["name", "key", "tenant", "revoked_at"]


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(UnscopedAdmin):
    list_display = ["tenant", "provider", "masked", "updated_at"]
    exclude = ["encrypted_secret"]
    readonly_fields = ["masked"]
