"""Usage (by day, agent or model) and invoices (JSON, CSV, PDF)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Router

from billing import exports, pricing
from billing.models import Invoice, InvoiceLine
from billing.selectors import month_first_day, usage_summary
from tenants.scoping import tenant_scope
from voiceplatform.api import schemas
from voiceplatform.api.auth import READ, caller
from voiceplatform.api.errors import ApiError, not_found
from voiceplatform.api.responses import ERROR_STATUSES, answers

router = Router(auth=READ, tags=["usage and invoices"])

MAX_RANGE_DAYS = 366
GROUPINGS = ("day", "agent", "model")


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.000001")))


@router.get("/usage", response=answers(schemas.UsageOut), summary="Usage")
def usage(
    request: HttpRequest,
    start: date | None = None,
    end: date | None = None,
    group_by: schemas.one_of(GROUPINGS) = "day",  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Usage and its billed amount from ``start`` to ``end`` (inclusive, UTC days; default:
    this month so far), one row per day, agent or model, as the console's usage page counts it.
    Input quantities exclude cached tokens, which have their own quantities."""
    api_key = caller(request)
    if group_by not in GROUPINGS:
        raise ApiError(400, "invalid_value", "group_by: day, agent or model", param="group_by")
    today = timezone.now().date()
    start = start or month_first_day(today)
    end = end or today
    if end < start:
        raise ApiError(400, "invalid_range", "end: before start.", param="end")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise ApiError(400, "invalid_range", "end: at most a year at a time.", param="end")
    summary = usage_summary(tenant_id=api_key.tenant_id, start=start, end=end)
    groups: dict[Any, dict[str, Any]] = {}
    for row in summary.rows:
        if group_by == "day":
            key: Any = row.day
            fields: dict[str, Any] = {"day": row.day}
        elif group_by == "agent":
            key = row.agent_id
            fields = {"agent": row.agent_id, "agent_name": row.agent_name}
        else:
            key = row.model
            fields = {"model": row.model}
        group = groups.setdefault(
            key,
            {**fields, "responses": 0, "billed": Decimal(0), "quantities": {}},
        )
        group["responses"] += row.responses
        group["billed"] += row.billed
        for code, quantity in pricing.billable_quantities(row.counts).items():
            group["quantities"][code] = group["quantities"].get(code, Decimal(0)) + quantity
    if group_by == "day":  # every day of the range, zero ones too (a chart's x axis)
        day = start
        while day <= end:
            groups.setdefault(
                day,
                {"day": day, "responses": 0, "billed": Decimal(0), "quantities": {}},
            )  # fmt: skip
            day += timedelta(days=1)
    rows = []
    for key in sorted(groups, key=lambda k: (k is None, str(k))):
        group = groups[key]
        rows.append(
            {
                **{k: v for k, v in group.items() if k not in ("billed", "quantities")},
                "quantities": {code: str(q) for code, q in group["quantities"].items()},
                "billed_usd": _money(group["billed"]),
            }
        )
    return {
        "start": start,
        "end": end,
        "group_by": group_by,
        "amount_basis": "billed",
        "cached_tokens_in_input": False,
        "billed_usd": _money(summary.billed),
        "data": rows,
    }


def invoice_out(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.pk,
        "number": invoice.number,
        "month": invoice.month,
        "status": invoice.status,
        "plan_name": invoice.plan_name,
        "markup_percent": str(invoice.markup_percent),
        "provider_total_usd": str(invoice.provider_total),
        "billed_total_usd": str(invoice.billed_total),
        "event_count": invoice.event_count,
        "created_at": invoice.created_at,
        "issued_at": invoice.issued_at,
    }


def _line_out(line: InvoiceLine) -> dict[str, Any]:
    return {
        "position": line.position,
        "is_adjustment": line.is_adjustment,
        "usage_month": line.usage_month,
        "agent": line.agent_id,
        "agent_name": line.agent_name,
        "model": line.model,
        "provider": line.provider,
        "token_type": line.token_type,
        "description": line.description,
        "quantity": str(line.quantity),
        "quantity_unit": line.quantity_unit,
        "unit_price_usd": str(line.unit_price),
        "price_unit": line.price_unit,
        "amount_usd": str(line.amount),
        "billed_amount_usd": str(line.billed_amount),
    }


def _invoice_and_lines(tenant_id: int, invoice_id: int) -> tuple[Invoice, list[InvoiceLine]]:
    with tenant_scope(tenant_id):
        invoice = Invoice.objects.select_related("tenant").filter(pk=invoice_id).first()
        if invoice is None:
            raise not_found("invoice")
        lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("position"))
    return invoice, lines


@router.get("/invoices", response=answers(schemas.InvoiceList), summary="List invoices")
def invoices_list(request: HttpRequest) -> dict[str, Any]:
    """Newest month first."""
    with tenant_scope(caller(request).tenant_id):
        invoices = list(Invoice.objects.order_by("-month"))
    return {"data": [invoice_out(invoice) for invoice in invoices]}


@router.get(
    "/invoices/{invoice_id}", response=answers(schemas.InvoiceDetail), summary="Read an invoice"
)
def invoices_read(request: HttpRequest, invoice_id: int) -> dict[str, Any]:
    invoice, lines = _invoice_and_lines(caller(request).tenant_id, invoice_id)
    return {**invoice_out(invoice), "lines": [_line_out(line) for line in lines]}


def _download(content_type: str) -> dict[str, Any]:
    return {
        "responses": {
            200: {
                "description": "The file",
                "content": {content_type: {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    }


@router.get(
    "/invoices/{invoice_id}/csv",
    response={ERROR_STATUSES: answers(None)[ERROR_STATUSES]},
    openapi_extra=_download("text/csv"),
    summary="Invoice as CSV",
)
def invoices_csv(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice, lines = _invoice_and_lines(caller(request).tenant_id, invoice_id)
    response = HttpResponse(exports.invoice_csv(invoice, lines), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="invoice-{invoice.number}.csv"'
    return response


@router.get(
    "/invoices/{invoice_id}/pdf",
    response={ERROR_STATUSES: answers(None)[ERROR_STATUSES]},
    openapi_extra=_download("application/pdf"),
    summary="Invoice as PDF",
)
def invoices_pdf(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice, lines = _invoice_and_lines(caller(request).tenant_id, invoice_id)
    content = exports.invoice_pdf(invoice, lines, tenant_name=invoice.tenant.name)
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="invoice-{invoice.number}.pdf"'
    return response
