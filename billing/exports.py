"""Finance exports: invoices and credit notes as CSV and PDF, usage as streamed CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from django.utils import timezone

from billing import invoicing, pricing
from billing.models import CreditNote, Invoice, InvoiceLine, UsageEvent
from billing.selectors import (
    TOKEN_FIELDS,
    counts_from_row,
    event_cost,
    month_first_day,
    price_book_load,
    utc_day,
)

# The customer's invoice CSV: billed prices only (no provider cost, no margin).
INVOICE_COLUMNS = [
    "invoice", "issue_date", "due_date", "month", "line", "adjustment", "usage_month",
    "agent_id", "agent", "model", "provider", "token_type", "description", "quantity",
    "quantity_unit", "unit_price_usd", "price_unit", "price_effective_from", "amount_usd",
]  # fmt: skip
# Staff's invoice CSV (the admin): provider cost and margin per line.
INTERNAL_COLUMNS = [
    "invoice", "month", "line", "adjustment", "usage_month", "agent_id", "agent", "model",
    "provider", "token_type", "description", "quantity", "quantity_unit",
    "provider_unit_price_usd", "price_unit", "price_effective_from", "provider_amount_usd",
    "billed_amount_usd", "margin_usd",
]  # fmt: skip
# Finance's usage CSV: one row per billable item of each event (a token type of a response),
# with the price version and the invoice line it is on, to re-derive every line.
BILLABLE_COLUMNS = [
    "occurred_at", "usage_month", "upstream_response_id", "session_id", "agent_id", "agent",
    "kind", "model", "provider", "token_type", "quantity", "quantity_unit", "unit_price_usd",
    "price_unit", "price_entry_id", "price_effective_from", "amount_exact_usd", "invoice",
    "invoice_line",
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
    """The customer's CSV: every line at billed prices (no provider cost), then the subtotal,
    tax and total rows. Lines billed $0.00 stay here (the PDF folds them), so the lines always
    add up to the subtotal."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(INVOICE_COLUMNS)
    common = [invoice.number or "", invoice.issue_date or "", invoice.due_date or "",
              f"{invoice.month:%Y-%m}"]  # fmt: skip
    for line in lines:
        writer.writerow(
            [
                *common,
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
                pricing.with_markup(line.unit_price, invoice.markup_percent).normalize(),
                line.price_unit,
                line.price_effective_from or "",
                line.billed_amount,
            ]  # fmt: skip
        )
    tax = invoicing.TaxTerms(invoice.tax_mode, invoice.tax_rate_percent, invoice.tax_note)
    summary = [("SUBTOTAL", invoice.billed_total), (tax.label.upper(), invoice.tax_total),
               ("TOTAL", invoice.total)]  # fmt: skip
    for label, amount in summary:  # in the description column, the amount in the last
        writer.writerow([*common, *[""] * 8, label, *[""] * 5, amount])
    return buffer.getvalue()


def invoice_csv_internal(invoice: Invoice, lines: Iterable[InvoiceLine]) -> str:
    """Staff only (the admin): every line with provider cost and billed amount (the margin)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(INTERNAL_COLUMNS)
    for line in lines:
        writer.writerow(
            [
                invoice.number or "",
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
                line.billed_amount - line.amount,
            ]  # fmt: skip
        )
    writer.writerow(
        [
            invoice.number or "",
            f"{invoice.month:%Y-%m}",
            *[""] * 8,
            "TOTAL",
            *[""] * 5,
            invoice.provider_total,
            invoice.billed_total,
            invoice.billed_total - invoice.provider_total,
        ]  # fmt: skip
    )
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


def billable_csv_rows(
    events: Iterable[UsageEvent], *, markup_for_pending: Decimal
) -> Iterator[str]:
    """One CSV row per billable item: each non-zero token type (or metered audio) of each event,
    at the customer's unit price of its invoice (``markup_for_pending``, the plan's today, for
    events on no invoice yet) and the price book version in force on its day.

    Summing ``quantity`` by ``invoice``/``invoice_line`` and multiplying by ``unit_price_usd``
    (per ``price_unit``), rounded half-up to the cent, gives every line's amount.
    The events should be an ``iterator()`` with ``invoice`` selected.
    """
    writer = csv.writer(_Echo())
    book = price_book_load()
    positions: dict[int, dict[tuple, int]] = {}
    yield writer.writerow(BILLABLE_COLUMNS)
    for event in events:
        day = utc_day(event.occurred_at)
        usage_month = month_first_day(day)
        local = event.provider == pricing.PROVIDER_LOCAL
        try:
            version = None if local else book.version_for(model=event.model, day=day)
        except pricing.MissingPrice:
            version = None
        rates = version.rates if version is not None else pricing.LOCAL_ENGINE
        invoice = event.invoice
        markup = invoice.markup_percent if invoice is not None else markup_for_pending
        if invoice is not None and invoice.pk not in positions:
            positions[invoice.pk] = {
                (line.usage_month, line.agent_id, line.model, line.provider,
                 line.price_effective_from, line.is_analysis, line.token_type): line.position
                for line in InvoiceLine.objects.filter(invoice=invoice)
            }  # fmt: skip
        analysis = event.kind == UsageEvent.Kind.ANALYSIS
        for token_type in pricing.TOKEN_TYPES:
            quantity = pricing.billable_quantities(counts_from_row(event))[token_type.code]
            if not quantity:
                continue
            unit_price = pricing.with_markup(getattr(rates, token_type.rate_field), markup)
            effective_from = version.effective_from if version is not None else None
            key = (usage_month, event.agent_id, event.model, event.provider, effective_from,
                   analysis, token_type.code)  # fmt: skip
            line = positions.get(invoice.pk, {}).get(key, "") if invoice is not None else ""
            yield writer.writerow(
                [
                    timezone.localtime(event.occurred_at, UTC).isoformat(),
                    f"{usage_month:%Y-%m}",
                    event.upstream_response_id,
                    event.session_id or "",
                    event.agent_id or "",
                    event.agent.name if event.agent_id and event.agent else "",
                    event.kind,
                    event.model,
                    event.provider,
                    token_type.code,
                    quantity,
                    token_type.unit,
                    unit_price.normalize(),
                    token_type.price_unit,
                    (version.entry_id or "published") if version is not None else "",
                    version.effective_from if version is not None and version.entry_id else "",
                    pricing.line_cost(token_type, quantity, unit_price).normalize(),
                    invoice.number if invoice is not None else "",
                    line,
                ]
            )


def markup_text(value: object) -> str:
    """A string shown as itself in a ReportLab ``Paragraph``, whose text is markup: a tenant's
    ``<img>`` or ``<a href>`` in a name must stay text."""
    return xml_escape(str(value))


def _party(title: str, party: dict, style: Any) -> list:
    from reportlab.platypus import Paragraph

    parts = [f"<b>{markup_text(title)}</b>", f"<b>{markup_text(party.get('legal_name', ''))}</b>"]
    parts += [markup_text(part) for part in str(party.get("address", "")).splitlines() if part]
    if party.get("tax_id"):
        parts.append(f"Tax ID: {markup_text(party['tax_id'])}")
    if party.get("email"):
        parts.append(markup_text(party["email"]))
    return [Paragraph("<br/>".join(parts), style)]


def _logo(seller: dict) -> Any:
    """The issuer's logo, at most 45 × 20 mm, or None (missing or unreadable: no logo)."""
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image

    from billing.models import IssuerProfile

    name = seller.get("logo")
    if not name:
        return None
    storage = IssuerProfile._meta.get_field("logo").storage
    try:
        with storage.open(name) as handle:
            data = io.BytesIO(handle.read())
        width, height = ImageReader(data).getSize()
    except Exception:  # a missing or broken file must not stop the invoice
        return None
    scale = min(45 * mm / width, 20 * mm / height)
    data.seek(0)
    return Image(data, width=width * scale, height=height * scale)


def _document(
    *,
    title: str,
    facts: list[tuple[str, str]],
    seller: dict,
    buyer: dict,
    body: list,
    totals: list[tuple[str, str]],
    notes: list[str],
) -> bytes:
    """An A4 document: seller (with logo) and title with facts at the top, the buyer, the body,
    the totals on the right, then the notes. Every text passed in is escaped here or by the
    caller (``markup_text``)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=16 * mm, rightMargin=16 * mm, topMargin=14 * mm,
        bottomMargin=16 * mm, title=title, author=str(seller.get("legal_name", "")),
    )  # fmt: skip
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8.5, leading=11)
    heading = styles["Title"].clone("doc-title", alignment=2, fontSize=18, spaceAfter=4)
    logo = _logo(seller)
    seller_cell = ([logo, Spacer(1, 2 * mm)] if logo is not None else []) + _party(
        "From", seller, small
    )
    fact_rows = "<br/>".join(f"{markup_text(k)}: <b>{markup_text(v)}</b>" for k, v in facts)
    title_cell = [Paragraph(markup_text(title), heading),
                  Paragraph(fact_rows, small.clone("facts", alignment=2))]  # fmt: skip
    top = Table([[seller_cell, title_cell]], colWidths=[95 * mm, 83 * mm])
    top.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story: list = [top, Spacer(1, 6 * mm)]
    story += _party("Bill to", buyer, small)
    story += [Spacer(1, 6 * mm), *body, Spacer(1, 4 * mm)]
    total_table = Table(
        [[markup_text(label), amount] for label, amount in totals],
        colWidths=[50 * mm, 35 * mm],
        hAlign="RIGHT",
    )
    total_table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
                ("FONT", (0, -1), (-1, -1), "Helvetica-Bold", 10),
                ("ALIGN", (1, 0), (1, -1), "RIGHT"),
                ("LINEABOVE", (0, -1), (-1, -1), 0.75, colors.black),
            ]
        )
    )
    story += [total_table, Spacer(1, 6 * mm)]
    story += [Paragraph(note, small) for note in notes if note]

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.drawRightString(A4[0] - 16 * mm, 9 * mm, f"{title} · page {doc.page}")
        canvas.restoreState()

    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def invoice_pdf(invoice: Invoice, lines: list[InvoiceLine]) -> bytes:
    """The customer's invoice: seller and buyer, number and dates, the lines grouped per agent
    and model with lines billed $0.00 folded into one row, subtotal, tax and total. Billed
    prices only: no provider cost, no margin."""
    from reportlab.lib import colors
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Table, TableStyle

    style = invoice.currency_display
    small = getSampleStyleSheet()["BodyText"].clone("cell", fontSize=8.5, leading=10.5)
    rows: list[list] = [["Description", "Quantity", "Unit price", "Amount"]]
    commands: list[tuple] = []
    for section in invoicing.customer_sections(lines, markup_percent=invoice.markup_percent):
        commands.append(("SPAN", (0, len(rows)), (2, len(rows))))
        commands.append(("FONT", (0, len(rows)), (-1, len(rows)), "Helvetica-Bold", 8.5))
        commands.append(("BACKGROUND", (0, len(rows)), (-1, len(rows)), colors.whitesmoke))
        rows.append([Paragraph(f"<b>{markup_text(section.heading)}</b>", small), "", "",
                     invoicing.money(section.amount, style)])  # fmt: skip
        for row in section.rows:
            rows.append(
                [
                    Paragraph("&nbsp;&nbsp;" + markup_text(row.label), small),
                    f"{row.quantity.normalize():,f} {row.quantity_unit}",
                    f"${row.unit_price:f} / {row.price_unit}",
                    invoicing.money(row.amount, style),
                ]
            )
    folded = invoicing.folded_lines(lines)
    if folded.count:
        plural = "s" if folded.count != 1 else ""
        text = f"{folded.count} further usage line{plural}, each under half a cent (see the CSV)"
        rows.append([Paragraph(text, small), "", "", invoicing.money(folded.amount, style)])
    if len(rows) == 1:
        rows.append([Paragraph("No billable usage.", small), "", "", invoicing.money(Decimal(0))])
    table = Table(rows, colWidths=[86 * mm, 32 * mm, 36 * mm, 24 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8.5),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 8.5),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                *commands,
            ]
        )
    )
    tax = invoicing.TaxTerms(invoice.tax_mode, invoice.tax_rate_percent, invoice.tax_note)
    terms = (
        (invoice.due_date - invoice.issue_date).days
        if invoice.due_date and invoice.issue_date
        else 0
    )
    seller = invoice.seller or {"legal_name": ""}
    notes = [
        markup_text(tax.note),
        f"Payment due by <b>{invoice.due_date}</b> ({terms} days)." if invoice.due_date else "",
        "Payment details:<br/>" + "<br/>".join(
            markup_text(part) for part in str(seller.get("payment_details", "")).splitlines()
        ) if seller.get("payment_details") else "",
        "Amounts in US dollars. Each line is quantity × unit price, rounded half-up to the cent.",
    ]  # fmt: skip
    return _document(
        title=f"Invoice {invoice.number or '(draft)'}",
        facts=[
            ("Invoice number", invoice.number or "(draft)"),
            ("Issue date", str(invoice.issue_date or "")),
            ("Due date", str(invoice.due_date or "")),
            ("Service period", f"{invoice.month:%B %Y} (UTC)"),
            ("Status", invoice.get_status_display()),
        ],
        seller=seller,
        buyer=invoice.buyer or {"legal_name": invoice.tenant.name},
        body=[table],
        totals=[
            ("Subtotal", invoicing.money(invoice.billed_total, style)),
            (tax.label, invoicing.money(invoice.tax_total, style)),
            ("Total due", invoicing.money(invoice.total, style)),
        ],
        notes=notes,
    )


def credit_note_pdf(note: CreditNote) -> bytes:
    """A credit note: the invoice it corrects, why, and the amount credited with its tax."""
    from reportlab.lib import colors
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Table, TableStyle

    invoice = note.invoice
    style = invoice.currency_display
    small = getSampleStyleSheet()["BodyText"].clone("cell", fontSize=8.5, leading=10.5)
    description = (f"Credit on invoice {markup_text(invoice.number)} of {invoice.issue_date} "
                   f"(usage of {invoice.month:%B %Y}): {markup_text(note.reason)}")  # fmt: skip
    table = Table(
        [["Description", "Amount"],
         [Paragraph(description, small), invoicing.money(-note.subtotal, style)]],
        colWidths=[150 * mm, 28 * mm],
    )  # fmt: skip
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8.5),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 8.5),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    tax = invoicing.TaxTerms(invoice.tax_mode, invoice.tax_rate_percent, invoice.tax_note)
    return _document(
        title=f"Credit note {note.number}",
        facts=[
            ("Credit note number", note.number),
            ("Issue date", str(note.issue_date)),
            ("Corrects invoice", f"{invoice.number} of {invoice.issue_date}"),
        ],
        seller=note.seller,
        buyer=note.buyer,
        body=[table],
        totals=[
            ("Subtotal", invoicing.money(-note.subtotal, style)),
            (tax.label, invoicing.money(-note.tax_total, style)),
            ("Total credited", invoicing.money(-note.total, style)),
        ],
        notes=[markup_text(tax.note), "Amounts in US dollars."],
    )
