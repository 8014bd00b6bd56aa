"""Finance pages of the console: usage, spend caps, invoices and exports (owner and finance)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from billing import budgets, charts, exports, figures, pricing, services, tasks
from billing.forms import MonthlyBudgetForm
from billing.models import BudgetAlert, Invoice, InvoiceLine, SpendCap
from billing.selectors import (
    SpendFigures,
    cap_spend,
    day_start,
    month_first_day,
    plan_terms,
    usage_events_for_export,
    usage_summary,
    utc_day,
)
from tenants.access import tenant_object_get
from tenants.console import tenant_view
from tenants.models import WidgetKey
from tenants.scoping import tenant_scope

MAX_RANGE_DAYS = 366


def _date_range(request: HttpRequest) -> tuple[date, date, str]:
    """The ``start``/``end`` (inclusive) of the query, this month by default, and any error."""
    today = utc_day(timezone.now())
    start, end = month_first_day(today), today
    try:
        if request.GET.get("start"):
            start = date.fromisoformat(request.GET["start"])
        if request.GET.get("end"):
            end = date.fromisoformat(request.GET["end"])
    except ValueError:
        return month_first_day(today), today, "Dates must look like 2026-11-21."
    if end < start:
        return start, start, "The end is before the start."
    if (end - start).days >= MAX_RANGE_DAYS:
        return start, start + timedelta(days=MAX_RANGE_DAYS - 1), "At most a year at a time."
    return start, end, ""


@require_GET
@tenant_view(finance=True)
def usage(request: HttpRequest) -> HttpResponse:
    return _usage_page(request)


def _usage_page(
    request: HttpRequest, *, budget_form: MonthlyBudgetForm | None = None, status: int = 200
) -> HttpResponse:
    start, end, error = _date_range(request)
    if error:
        messages.error(request, error)
    tenant = request.tenant
    summary = usage_summary(tenant_id=tenant.pk, start=start, end=end)
    spend = cap_spend(tenant_id=tenant.pk)
    caps = list(SpendCap.objects.select_related("agent", "widget_key").order_by("pk"))
    for cap in caps:  # today's and this month's billed spend, next to each cap
        by_target = spend.by_agent if cap.agent_id else spend.by_widget_key
        cap.spend = by_target.get(cap.agent_id or cap.widget_key_id, SpendFigures())
    if budget_form is None:
        budget_form = MonthlyBudgetForm(
            initial={"monthly_budget_usd": tenant.monthly_budget_usd},
            ceiling=tenant.monthly_budget_ceiling_usd,
        )
    context = {
        "start": start,
        "end": end,
        "summary": summary,
        "show_provider_cost": request.user.is_staff,
        "cost_chart": charts.cost_per_day(summary.billed_by_day_and_model, summary.models),
        "token_chart": charts.tokens_by_type(summary.tokens_by_type),
        "spend": spend,
        "budget": tenant.effective_monthly_budget_usd,
        "budget_form": budget_form,
        "alerts": BudgetAlert.objects.filter(month=month_first_day(utc_day(timezone.now()))),
        "caps": caps,
        "agents": capped_agents(),
        "widget_keys": WidgetKey.objects.filter(revoked_at__isnull=True).order_by("name"),
        "cached_note": figures.CACHED_NOTE,
        "billed_note": figures.BILLED_NOTE,
    }
    return render(request, "console/billing/usage.html", context, status=status)


@require_POST
@tenant_view(finance=True)
def budget_save(request: HttpRequest) -> HttpResponse:
    """Set or clear the tenant's monthly budget, up to the platform's ceiling (owner, finance)."""
    tenant = request.tenant
    form = MonthlyBudgetForm(request.POST, ceiling=tenant.monthly_budget_ceiling_usd)
    if form.is_valid():
        amount = form.cleaned_data["monthly_budget_usd"]
        try:
            changed = budgets.tenant_budget_set(tenant=tenant, actor=request.user, amount=amount)
        except ValidationError as problem:  # the ceiling moved since the form was read
            for message in problem.message_dict.get("monthly_budget_usd", []):
                form.add_error("monthly_budget_usd", message)
        else:
            if changed:
                tasks.enqueue_budget_alerts_check(tenant.pk)
                messages.success(
                    request,
                    "Monthly budget saved." if amount is not None else "Monthly budget removed.",
                )
            return redirect("billing-usage", tenant_slug=tenant.slug)
    return _usage_page(request, budget_form=form, status=400)


def capped_agents():
    """The tenant's active agents, which a spend cap may target."""
    agent = SpendCap.agent_model()
    return agent.objects.filter(status=agent.Status.ACTIVE).order_by("name")


@require_GET
@tenant_view(finance=True)
def usage_export(request: HttpRequest) -> StreamingHttpResponse | HttpResponse:
    """Raw usage events of a date range as CSV, streamed row by row from the database."""
    start, end, error = _date_range(request)
    if error:
        return HttpResponse(error, status=400, content_type="text/plain")
    tenant_id = request.tenant.pk
    markup_percent = plan_terms(tenant_id=tenant_id).markup_percent
    with_provider_cost = request.user.is_staff

    def rows():
        # The response is streamed after the view returns: enter the tenant's scope again.
        with tenant_scope(tenant_id):
            events = usage_events_for_export(
                start=day_start(start), end=day_start(end + timedelta(days=1))
            )
            yield from exports.usage_csv_rows(
                events, markup_percent=markup_percent, with_provider_cost=with_provider_cost
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    filename = f"usage-{request.tenant.slug}-{start:%Y%m%d}-{end:%Y%m%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_POST
@tenant_view(finance=True)
def spend_cap_save(request: HttpRequest) -> HttpResponse:
    """Set or clear the daily cap of an agent or a widget key of this tenant."""
    target = request.POST.get("target", "")
    kind, _, raw_id = target.partition(":")
    if kind == "agent":
        target_ids = {"agent_id": tenant_object_get(SpendCap.agent_model(), pk=raw_id).pk}
    elif kind == "widget_key":
        target_ids = {"widget_key_id": tenant_object_get(WidgetKey, pk=raw_id).pk}
    else:
        messages.error(request, "Choose an agent or a widget key.")
        return redirect("billing-usage", tenant_slug=request.tenant.slug)
    raw_limit = request.POST.get("daily_limit_usd", "").strip()
    limit = None
    if raw_limit:
        try:
            limit = Decimal(raw_limit)
        except InvalidOperation:
            limit = Decimal(-1)
        if not limit.is_finite() or limit < 0 or limit >= Decimal("1e10"):
            messages.error(request, "The daily cap must be an amount in USD, like 25.00.")
            return redirect("billing-usage", tenant_slug=request.tenant.slug)
        limit = pricing.cents(limit)
    services.spend_cap_set(tenant_id=request.tenant.pk, daily_limit_usd=limit, **target_ids)
    messages.success(request, "Daily cap saved." if limit is not None else "Daily cap removed.")
    return redirect("billing-usage", tenant_slug=request.tenant.slug)


@require_GET
@tenant_view(finance=True)
def invoice_list(request: HttpRequest) -> HttpResponse:
    invoices = Invoice.objects.order_by("-month")
    return render(request, "console/billing/invoice_list.html", {"invoices": invoices})


def _invoice_and_lines(invoice_id: int) -> tuple[Invoice, list[InvoiceLine]]:
    invoice = tenant_object_get(Invoice, pk=invoice_id)
    return invoice, list(InvoiceLine.objects.filter(invoice=invoice).order_by("position"))


@require_GET
@tenant_view(finance=True)
def invoice_detail(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice, lines = _invoice_and_lines(invoice_id)
    adjustments = sum((line.billed_amount for line in lines if line.is_adjustment), Decimal(0))
    context = {"invoice": invoice, "lines": lines, "adjustments": adjustments}
    return render(request, "console/billing/invoice_detail.html", context)


@require_GET
@tenant_view(finance=True)
def invoice_csv(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice, lines = _invoice_and_lines(invoice_id)
    response = HttpResponse(
        exports.invoice_csv(invoice, lines), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="invoice-{invoice.number}.csv"'
    return response


@require_GET
@tenant_view(finance=True)
def invoice_pdf(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice, lines = _invoice_and_lines(invoice_id)
    content = exports.invoice_pdf(invoice, lines, tenant_name=request.tenant.name)
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="invoice-{invoice.number}.pdf"'
    return response
