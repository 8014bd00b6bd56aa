"""Finance exports: an invoice as CSV and as PDF, raw usage as streamed CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC
from decimal import Decimal
from xml.sax.saxutils import escape as xml_escape

from django.utils import timezone

from billing import pricing
from billing.models import Invoice, InvoiceLine, UsageEvent
from billing.selectors import TOKEN_FIELDS, event_cost, price_book_load

INVOICE_COLUMNS = [
    "invoice", "month", "line", "adjustment", "usage_month", "agent_id", "agent", "model",
    "provider", "token_type", "description", "quantity", "quantity_unit", "unit_price_usd",
    "price_unit", "price_effective_from", "provider_amount_usd", "billed_amount_usd",
]  # fmt: skip
# The raw counts as the Realtime API reports them: an input count includes the cached tokens of
# its modality (cached tokens are a subset), and the column names say so.
USAGE_TOKEN_COLUMNS = [
    f"{name}_incl_cached" if name.startswith("input_") else name for name in TOKEN_FIELDS
]
USAGE_COLUMNS = [
    "occurred_at", "upstream_response_id", "session_id", "agent_id", "widget_key_id",
    "provider", "kind", "model", "status", *USAGE_TOKEN_COLUMNS, "audio_ms", "billed_usd",
    "invoice",
]  # fmt: skip
# Staff only: the platform's own cost, after the billed amount.
USAGE_COLUMNS_WITH_PROVIDER_COST = [*USAGE_COLUMNS[:-1], "provider_cost_usd", "invoice"]


class _Echo:
    """A file-like object whose ``write`` hands the line back (for streaming csv.writer)."""

    def write(self, value: str) -> str:
        return value


def invoice_csv(invoice: Invoice, lines: Iterable[InvoiceLine]) -> str:
    """Every line, then two total rows whose amounts equal the invoice's totals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(INVOICE_COLUMNS)
    for line in lines:
        writer.writerow(
            [
                invoice.number,
                f"{invoice.month:%Y-%m}",
                line.position,
                "yes" if line.is_adjustment else "no",
                f"{line.usage_month:%Y-%m}",
                line.agent_id or "",
                line.agent_name,
                line.model,
                line.provider,
                line.token_type,
                line.description,
                line.quantity,
                line.quantity_unit,
                line.unit_price,
                line.price_unit,
                line.price_effective_from or "",
                line.amount,
                line.billed_amount,
            ]  # fmt: skip
        )
    total = {
        "invoice": invoice.number,
        "month": f"{invoice.month:%Y-%m}",
        "description": "TOTAL",
        "provider_amount_usd": invoice.provider_total,
        "billed_amount_usd": invoice.billed_total,
    }
    writer.writerow([total.get(column, "") for column in INVOICE_COLUMNS])
    return buffer.getvalue()


def usage_csv_rows(
    events: Iterable[UsageEvent],
    *,
    markup_percent: Decimal = Decimal(0),
    with_provider_cost: bool = False,
) -> Iterator[str]:
    """CSV lines of raw usage events, one at a time (the events should be an ``iterator()``).

    ``billed_usd`` is each event's billed amount, unrounded (the invoice rounds per line);
    ``with_provider_cost`` (staff) adds the provider cost.
    """
    writer = csv.writer(_Echo())
    book = price_book_load()
    yield writer.writerow(USAGE_COLUMNS_WITH_PROVIDER_COST if with_provider_cost else USAGE_COLUMNS)
    for event in events:
        cost = event_cost(event, book)
        amounts = [pricing.with_markup(cost, markup_percent)]
        if with_provider_cost:
            amounts.append(cost)
        yield writer.writerow(
            [
                timezone.localtime(event.occurred_at, UTC).isoformat(),
                event.upstream_response_id,
                event.session_id or "",
                event.agent_id or "",
                event.widget_key_id or "",
                event.provider,
                event.kind,
                event.model,
                event.status,
                *(getattr(event, name) for name in TOKEN_FIELDS),
                event.audio_ms,
                *amounts,
                event.invoice_id or "",
            ]  # fmt: skip
        )


def markup_text(value: object) -> str:
    """A string shown as itself in a ReportLab ``Paragraph``, whose text is markup: a tenant's
    ``<img>`` or ``<a href>`` in a name must stay text."""
    return xml_escape(str(value))


def invoice_pdf(invoice: Invoice, lines: list[InvoiceLine], *, tenant_name: str) -> bytes:
    """A plain A4 invoice: header, lines, totals (reportlab's built-in Helvetica)."""
    # ReportLab is heavy and only a PDF export needs it: imported here, not at start-up.
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=f"Invoice {invoice.number}",
        author="VoicePlatform",
    )
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)
    story = [
        Paragraph(f"Invoice {markup_text(invoice.number)}", styles["Title"]),
        Paragraph(
            f"{markup_text(tenant_name)} · usage of {invoice.month:%B %Y} · status {invoice.status}"
            + (f" · issued {invoice.issued_at:%Y-%m-%d}" if invoice.issued_at else ""),
            styles["BodyText"],
        ),
        Paragraph(
            f"Plan: {markup_text(invoice.plan_name)} "
            f"({invoice.markup_percent:+}% on provider cost). "
            "Each line is rounded half-up to the cent; totals are sums of the lines.",
            small,
        ),
        Spacer(1, 6 * mm),
    ]
    rows = [["#", "Description", "Quantity", "Unit price (USD)", "Provider (USD)", "Billed (USD)"]]
    for line in lines:
        rows.append(
            [
                str(line.position),
                Paragraph(markup_text(line.description), small),
                f"{line.quantity.normalize():f} {line.quantity_unit}",
                f"{line.unit_price.normalize():f} / {line.price_unit}",
                f"{line.amount}",
                f"{line.billed_amount}",
            ]
        )
    rows.append(["", "Total", "", "", f"{invoice.provider_total}", f"{invoice.billed_total}"])
    table = Table(rows, colWidths=[10 * mm, 120 * mm, 38 * mm, 42 * mm, 30 * mm, 30 * mm])
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
                ("FONT", (0, -1), (-1, -1), "Helvetica-Bold", 9),
                ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey),
                ("LINEABOVE", (0, -1), (-1, -1), 0.5, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story += [table, Spacer(1, 6 * mm)]
    story.append(Paragraph(f"Total due: USD {invoice.billed_total}", styles["Heading2"]))
    document.build(story)
    return buffer.getvalue()
