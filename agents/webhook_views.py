"""Console pages for the tenant's webhook endpoints: list, edit, delivery log, send again/test.

Every member reads; owners and admins change (``tenant_view``). The work is in
``agents.webhooks``.
"""

from __future__ import annotations

from collections import defaultdict

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents import webhooks
from agents.console_views import _form_errors_from
from agents.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from agents.webhook_forms import WebhookEndpointForm
from tenants.access import tenant_object_get
from tenants.console import tenant_view

DELIVERIES_PER_PAGE = 50


@tenant_view(configure_changes=True)
def webhook_list(request: HttpRequest) -> HttpResponse:
    form = WebhookEndpointForm(request.POST or None, initial={"enabled": True})
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = webhooks.webhook_endpoint_create(
                tenant=request.tenant, actor=request.user, fields=form.cleaned_data
            )
        except ValidationError as error:
            _form_errors_from(error, form)
        else:
            messages.success(request, f"Endpoint {endpoint.url} added.")
            return redirect("webhook-detail", request.tenant.slug, endpoint.pk)
    endpoints = WebhookEndpoint.objects.select_related("agent").order_by("pk")
    return render(
        request,
        "console/webhooks/list.html",
        {
            "endpoints": endpoints,
            "form": form,
            "secret_masked": request.tenant.webhook_secret_masked,
        },
    )


@tenant_view(configure_changes=True)
def webhook_detail(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = tenant_object_get(WebhookEndpoint, pk=endpoint_id)
    form = WebhookEndpointForm(
        request.POST or None, initial=WebhookEndpointForm.initial_for(endpoint)
    )
    if request.method == "POST" and form.is_valid():
        try:
            changed = webhooks.webhook_endpoint_update(
                endpoint=endpoint, actor=request.user, fields=form.cleaned_data
            )
        except ValidationError as error:
            endpoint.refresh_from_db()
            _form_errors_from(error, form)
        else:
            messages.success(request, "Endpoint saved." if changed else "Nothing changed.")
            return redirect("webhook-detail", request.tenant.slug, endpoint.pk)
    deliveries = list(
        WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-created_at", "-pk")[
            :DELIVERIES_PER_PAGE
        ]
    )
    attempts = defaultdict(list)
    for attempt in WebhookAttempt.objects.filter(delivery__in=deliveries).order_by("number"):
        attempts[attempt.delivery_id].append(attempt)
    rows = [(delivery, attempts[delivery.pk]) for delivery in deliveries]
    return render(
        request,
        "console/webhooks/detail.html",
        {"endpoint": endpoint, "form": form, "rows": rows},
    )


@require_POST
@tenant_view(configure=True)
def webhook_delete(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = tenant_object_get(WebhookEndpoint, pk=endpoint_id)
    webhooks.webhook_endpoint_delete(endpoint=endpoint, actor=request.user)
    messages.success(request, f"Endpoint {endpoint.url} deleted.")
    return redirect("webhook-list", request.tenant.slug)


def _attempt_message(request: HttpRequest, attempt: WebhookAttempt, what: str) -> None:
    status = f"HTTP {attempt.http_status}" if attempt.http_status else attempt.error_kind
    text = f"{what}: {status} in {attempt.latency_ms} ms."
    if attempt.succeeded:
        messages.success(request, text)
    else:
        messages.error(request, f"{text} {attempt.error_message}".strip())


@require_POST
@tenant_view(configure=True)
def webhook_send_test(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = tenant_object_get(WebhookEndpoint, pk=endpoint_id)
    attempt = webhooks.endpoint_send_test(endpoint=endpoint)
    _attempt_message(request, attempt, "Test event sent")
    return redirect("webhook-detail", request.tenant.slug, endpoint.pk)


@require_POST
@tenant_view(configure=True)
def webhook_delivery_send_again(
    request: HttpRequest, endpoint_id: int, delivery_id: int
) -> HttpResponse:
    endpoint = tenant_object_get(WebhookEndpoint, pk=endpoint_id)
    delivery = tenant_object_get(WebhookDelivery, pk=delivery_id, endpoint=endpoint)
    attempt = webhooks.delivery_send_again(delivery=delivery)
    if attempt is None:
        messages.error(request, "An attempt of this delivery is in flight; try again shortly.")
    else:
        _attempt_message(request, attempt, f"{delivery.event_type} sent again")
    return redirect("webhook-detail", request.tenant.slug, endpoint.pk)
