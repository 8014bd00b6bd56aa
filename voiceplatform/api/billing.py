"""Usage (by day, agent or model) and invoices (JSON, CSV, PDF)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Router

from billing import exports, invoicing, pricing
from billing.models import CreditNote, Invoice, InvoiceLine
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


def invoice_out(invoice: Invoice, credited: Decimal = Decimal(0)) -> dict[str, Any]:
    """The customer's view of an invoice: billed amounts and tax, no provider cost."""
    return {
        "id": invoice.pk,
        "number": invoice.number,
        "month": invoice.month,
        "status": invoice.status,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "subtotal_usd": str(invoice.billed_total),
        "tax_mode": invoice.tax_mode,
        "tax_rate_percent": str(invoice.tax_rate_percent),
        "tax_usd": str(invoice.tax_total),
        "total_usd": str(invoice.total),
        "credited_usd": str(credited),
        "paid_usd": str(invoice.amount_paid),
        "balance_usd": str(invoicing.invoice_balance(invoice, credited)),
        "event_count": invoice.event_count,
        "issued_at": invoice.issued_at,
        "paid_at": invoice.paid_at,
        "voided_at": invoice.voided_at,
    }


def _line_out(line: InvoiceLine, markup_percent: Decimal) -> dict[str, Any]:
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
        "unit_price_usd": str(pricing.with_markup(line.unit_price, markup_percent).normalize()),
        "price_unit": line.price_unit,
        "amount_usd": str(line.billed_amount),
    }


ISSUED = [Invoice.Status.OPEN, Invoice.Status.PAID, Invoice.Status.VOID]


def _credited(invoice_ids: list[int]) -> dict[int, Decimal]:
    rows = (
        CreditNote.objects.filter(invoice_id__in=invoice_ids)
        .values("invoice_id")
        .annotate(total=Sum("total"))
        .order_by()
    )
    return {row["invoice_id"]: row["total"] for row in rows}


def _invoice_and_lines(tenant_id: int, invoice_id: int) -> tuple[Invoice, list[InvoiceLine]]:
    with tenant_scope(tenant_id):
        invoice = Invoice.objects.filter(pk=invoice_id, status__in=ISSUED).first()
        if invoice is None:
            raise not_found("invoice")
        lines = list(
            InvoiceLine.objects.filter(invoice=invoice)
            .select_related("invoice")
            .order_by("position")
        )
    return invoice, lines


@router.get("/invoices", response=answers(schemas.InvoiceList), summary="List invoices")
def invoices_list(request: HttpRequest) -> dict[str, Any]:
    """Newest month first."""
    with tenant_scope(caller(request).tenant_id):
        invoices = list(Invoice.objects.filter(status__in=ISSUED).order_by("-month"))
        credited = _credited([invoice.pk for invoice in invoices])
    return {
        "data": [invoice_out(invoice, credited.get(invoice.pk, Decimal(0))) for invoice in invoices]
    }


@router.get(
    "/invoices/{invoice_id}", response=answers(schemas.InvoiceDetail), summary="Read an invoice"
)
def invoices_read(request: HttpRequest, invoice_id: int) -> dict[str, Any]:
    tenant_id = caller(request).tenant_id
    invoice, lines = _invoice_and_lines(tenant_id, invoice_id)
    with tenant_scope(tenant_id):
        credited = _credited([invoice.pk]).get(invoice.pk, Decimal(0))
    return {
        **invoice_out(invoice, credited),
        "lines": [_line_out(line, invoice.markup_percent) for line in lines],
    }


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
    content = exports.invoice_pdf(invoice, lines)
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="invoice-{invoice.number}.pdf"'
    return response
