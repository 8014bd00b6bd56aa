"""Finance pages of the console: usage, spend caps, invoices and exports (owner and finance)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing import budgets, charts, exports, figures, invoicing, pricing, services, tasks
from billing.forms import PROFILE_FIELDS, BillingProfileForm, MonthlyBudgetForm
from billing.models import BudgetAlert, CreditNote, Invoice, InvoiceLine, SpendCap, UsageEvent
from billing.selectors import (
    SpendFigures,
    cap_spend,
    day_start,
    month_first_day,
    next_month,
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


def _month_param(request: HttpRequest) -> date | None:
    try:
        year, month = request.GET.get("month", "").split("-")
        return date(int(year), int(month), 1)
    except ValueError:
        return None


@require_GET
@tenant_view(finance=True)
def usage_billable_export(request: HttpRequest) -> HttpResponse:
    """A month's usage for finance: one row per billable item with its price version and the
    invoice line it is on (``?month=2026-10``)."""
    month = _month_param(request)
    if month is None:
        return HttpResponse("month must look like 2026-10.", status=400, content_type="text/plain")
    tenant_id = request.tenant.pk
    markup = plan_terms(tenant_id=tenant_id).markup_percent
    start, end = day_start(month), day_start(next_month(month))
    return _billable_response(
        tenant_id, markup, f"usage-{request.tenant.slug}-{month:%Y-%m}.csv",
        occurred_at__gte=start, occurred_at__lt=end,
    )  # fmt: skip


def _billable_response(tenant_id: int, markup: Decimal, filename: str, **filters: object):
    def rows():
        with tenant_scope(tenant_id):  # streamed after the view returns: scope again
            events = (
                UsageEvent.objects.filter(**filters)
                .select_related("invoice", "agent")
                .order_by("occurred_at", "pk")
                .iterator(chunk_size=2000)
            )
            yield from exports.billable_csv_rows(events, markup_for_pending=markup)

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_http_methods(["GET", "POST"])
@tenant_view(finance=True)
def billing_profile(request: HttpRequest) -> HttpResponse:
    """Who the tenant's invoices are addressed to (owner and finance); terms and tax shown."""
    profile = invoicing.tenant_billing_profile(tenant_id=request.tenant.pk)
    form = BillingProfileForm(request.POST or None, instance=profile)
    if request.method == "POST" and form.is_valid():
        services.billing_profile_update(
            tenant_id=request.tenant.pk,
            actor=request.user,
            fields={name: form.cleaned_data[name] for name in PROFILE_FIELDS},
        )
        messages.success(request, "Billing profile saved. It applies to invoices issued from now.")
        return redirect("billing-profile", tenant_slug=request.tenant.slug)
    return render(request, "console/billing/profile.html", {"form": form, "profile": profile})


@require_GET
@tenant_view(finance=True)
def invoice_list(request: HttpRequest) -> HttpResponse:
    invoices = list(Invoice.objects.exclude(status=Invoice.Status.DRAFT).order_by("-month"))
    notes = list(CreditNote.objects.select_related("invoice").order_by("-issue_date", "-pk"))
    credited: dict[int, Decimal] = {}
    for note in notes:
        credited[note.invoice_id] = credited.get(note.invoice_id, Decimal(0)) + note.total
    rows = [
        {
            "invoice": invoice,
            "credited": credited.get(invoice.pk, Decimal(0)),
            "balance": invoicing.invoice_balance(invoice, credited.get(invoice.pk, Decimal(0))),
        }
        for invoice in invoices
    ]
    context = {
        "rows": rows,
        "credit_notes": notes,
        "balance": invoicing.balances_of(invoices, credited),
        "style": invoicing.tenant_billing_profile(tenant_id=request.tenant.pk).currency_display,
    }
    return render(request, "console/billing/invoice_list.html", context)


@require_GET
@tenant_view(finance=True)
def invoice_draft(request: HttpRequest) -> HttpResponse:
    """The month to date as its invoice will be, priced by the close's own code."""
    try:
        draft = invoicing.invoice_draft(tenant_id=request.tenant.pk)
    except pricing.MissingPrice as error:
        messages.error(request, f"The draft cannot be priced: {error}. Platform staff are told.")
        return redirect("invoice-list", tenant_slug=request.tenant.slug)
    context = {"draft": draft, "folded": invoicing.folded_lines(draft.lines)}
    return render(request, "console/billing/invoice_draft.html", context)


def _invoice_and_lines(invoice_id: int) -> tuple[Invoice, list[InvoiceLine]]:
    invoice = tenant_object_get(Invoice, pk=invoice_id, status__in=ISSUED_STATUSES)
    lines = list(
        InvoiceLine.objects.filter(invoice=invoice).select_related("invoice").order_by("position")
    )
    return invoice, lines


ISSUED_STATUSES = [Invoice.Status.OPEN, Invoice.Status.PAID, Invoice.Status.VOID]


@require_GET
@tenant_view(finance=True)
def invoice_detail(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice, lines = _invoice_and_lines(invoice_id)
    notes = list(CreditNote.objects.filter(invoice=invoice).order_by("sequence"))
    credited = sum((note.total for note in notes), Decimal(0))
    context = {
        "invoice": invoice,
        "sections": invoicing.customer_sections(lines, markup_percent=invoice.markup_percent),
        "folded": invoicing.folded_lines(lines),
        "tax": invoicing.TaxTerms(invoice.tax_mode, invoice.tax_rate_percent, invoice.tax_note),
        "credit_notes": notes,
        "credited": credited,
        "balance": invoicing.invoice_balance(invoice, credited),
    }
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
    response = HttpResponse(exports.invoice_pdf(invoice, lines), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="invoice-{invoice.number}.pdf"'
    return response


@require_GET
@tenant_view(finance=True)
def invoice_usage_csv(request: HttpRequest, invoice_id: int) -> HttpResponse:
    """The usage an invoice billed, one row per billable item (re-derives every line)."""
    invoice, _ = _invoice_and_lines(invoice_id)
    return _billable_response(
        request.tenant.pk, invoice.markup_percent, f"usage-{invoice.number}.csv", invoice=invoice
    )


@require_GET
@tenant_view(finance=True)
def credit_note_pdf(request: HttpRequest, credit_note_id: int) -> HttpResponse:
    note = tenant_object_get(CreditNote, pk=credit_note_id)
    response = HttpResponse(exports.credit_note_pdf(note), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="credit-note-{note.number}.pdf"'
    return response
