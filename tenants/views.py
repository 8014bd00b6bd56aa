"""Console pages for tenant settings: API keys, widget keys, the provider credential."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents.models import Agent
from tenants import services
from tenants.access import memberships_for_user, tenant_object_get
from tenants.console import tenant_view
from tenants.forms import ApiKeyForm, ProviderCredentialForm, WidgetKeyForm
from tenants.models import ApiKey, ProviderCredential, WidgetKey


@login_required
def console_home(request: HttpRequest) -> HttpResponse:
    """Send the user to the tenant they used last, or their first one."""
    memberships = memberships_for_user(user=request.user)
    if not memberships:
        return render(request, "console/no_tenant.html", status=200)
    last = request.session.get("vp_last_tenant")
    slugs = [membership.tenant.slug for membership in memberships]
    return redirect("tenant-dashboard", tenant_slug=last if last in slugs else slugs[0])


@tenant_view()
def tenant_dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        "agent_count": Agent.objects.filter(status=Agent.Status.ACTIVE).count(),
        "api_key_count": ApiKey.objects.filter(revoked_at__isnull=True).count(),
        "widget_key_count": WidgetKey.objects.filter(revoked_at__isnull=True).count(),
        "credential": ProviderCredential.objects.first(),
    }
    return render(request, "console/dashboard.html", context)


@tenant_view()
def api_key_list(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    new_key = None
    if request.method == "POST":
        if not request.membership.can_configure:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid():
            _, new_key = services.api_key_issue(
                tenant=request.tenant, name=form.cleaned_data["name"]
            )
            messages.success(request, "API key issued. Copy it now: it is shown only once.")
            form = ApiKeyForm()
    context = {"api_keys": ApiKey.objects.order_by("-created_at"), "form": form, "new_key": new_key}
    return render(request, "console/api_keys.html", context)


@require_POST
@tenant_view(configure=True)
def api_key_revoke(request: HttpRequest, api_key_id: int) -> HttpResponse:
    api_key = tenant_object_get(ApiKey, pk=api_key_id)
    services.api_key_revoke(api_key=api_key)
    messages.success(request, f"API key {api_key.prefix}… revoked.")
    return redirect("api-key-list", tenant_slug=request.tenant.slug)


@tenant_view()
def widget_key_list(request: HttpRequest) -> HttpResponse:
    form = WidgetKeyForm(request.POST or None)
    if request.method == "POST":
        if not request.membership.can_configure:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid():
            widget_key = services.widget_key_create(
                tenant=request.tenant,
                name=form.cleaned_data["name"],
                allowed_origins=form.cleaned_data["allowed_origins"],
            )
            messages.success(request, f"Widget key {widget_key.name} created.")
            return redirect("widget-key-detail", request.tenant.slug, widget_key.pk)
    context = {"widget_keys": WidgetKey.objects.order_by("-created_at"), "form": form}
    return render(request, "console/widget_keys.html", context)


@tenant_view()
def widget_key_detail(request: HttpRequest, widget_key_id: int) -> HttpResponse:
    widget_key = tenant_object_get(WidgetKey, pk=widget_key_id)
    return render(request, "console/widget_key_detail.html", {"widget_key": widget_key})


@require_POST
@tenant_view(configure=True)
def widget_key_revoke(request: HttpRequest, widget_key_id: int) -> HttpResponse:
    widget_key = tenant_object_get(WidgetKey, pk=widget_key_id)
    services.widget_key_revoke(widget_key=widget_key)
    messages.success(request, f"Widget key {widget_key.name} revoked.")
    return redirect("widget-key-list", tenant_slug=request.tenant.slug)


@tenant_view()
def credentials(request: HttpRequest) -> HttpResponse:
    form = ProviderCredentialForm(request.POST or None)
    if request.method == "POST":
        if not request.membership.can_configure:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid():
            try:
                credential = services.provider_credential_set(
                    tenant=request.tenant, secret=form.cleaned_data["secret"]
                )
            except services.ServiceError as error:
                form.add_error("secret", str(error))
            else:
                messages.success(request, f"OpenAI key {credential.masked} saved.")
                return redirect("credentials", tenant_slug=request.tenant.slug)
    context = {"credential": ProviderCredential.objects.first(), "form": form}
    return render(request, "console/credentials.html", context)
