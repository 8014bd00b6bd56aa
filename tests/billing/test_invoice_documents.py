"""Invoices as documents: gapless numbers under concurrent closes, dates and tax, paid/void and
credit notes (console and audit log), the draft equal to the close, the customer PDF (rendered
with poppler) and the finance usage CSV that re-derives every line."""

from __future__ import annotations

import csv
import io
import shutil
import sqlite3
import subprocess
import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.db import connections
from django.urls import reverse

from billing import invoicing
from billing.models import (
    CreditNote,
    DocumentCounter,
    Invoice,
    InvoiceLine,
    PriceBookEntry,
    TenantBillingProfile,
    TenantPlan,
)
from billing.services import (
    InvoiceStateError,
    billing_profile_update,
    credit_note_issue,
    invoice_close_month,
    invoice_mark_paid,
    invoice_void,
)
from tenants import services as tenant_services
from tenants.models import AuditEvent
from tenants.scoping import scopes_disabled, tenant_scope
from tests.billing.conftest import at, record

OCTOBER = date(2026, 10, 1)
AFTER_OCTOBER = at(2026, 11, 2)
D = Decimal


def close(tenant, month=OCTOBER, now=AFTER_OCTOBER) -> Invoice:
    return invoice_close_month(tenant_id=tenant.pk, month=month, now=now)


def line_tuples(lines):
    return [
        (line.position, line.is_adjustment, line.is_analysis, line.usage_month, line.agent_id,
         line.agent_name, line.model, line.provider, line.token_type, line.description,
         line.quantity, line.quantity_unit, line.unit_price, line.price_unit,
         line.price_effective_from, line.amount, line.billed_amount)
        for line in lines
    ]  # fmt: skip


def stored_lines(invoice):
    with tenant_scope(invoice.tenant_id):
        return list(InvoiceLine.objects.filter(invoice=invoice).order_by("position"))


@pytest.fixture
def profile_a(world):
    return billing_profile_update(
        tenant_id=world.tenant_a.pk,
        actor=world.owner_a,
        fields={
            "legal_name": "Acme Voice GmbH", "address": "Hauptstrasse 1\n10115 Berlin\nGermany",
            "tax_id": "DE123456789", "billing_email": "ap@acme.example",
            "payment_terms_days": 14, "tax_mode": "rate", "tax_rate_percent": D("19"),
        },
    )  # fmt: skip


@pytest.fixture
def october_a(world, agents_a):
    support, faq = agents_a["support"], agents_a["faq"]
    record(world.tenant_a, support, "r1", at(2026, 10, 3), audio_in=10_000, cached_audio=4_000,
           audio_out=2_000, text_in=1_000, cached_text=500, text_out=200)  # fmt: skip
    record(world.tenant_a, faq, "r2", at(2026, 10, 9), audio_in=1_000_000, audio_out=250_000)
    record(world.tenant_a, support, "r3", at(2026, 10, 31, 23, 59), audio_out=100_000)
    return agents_a


# --- numbers ----------------------------------------------------------------------------------


@pytest.fixture
def three_tenants(world, agents_a):
    owner_c = tenant_services.user_get_or_create(email="owner-c@example.com",
                                                 password=world.password)  # fmt: skip
    tenant_c = tenant_services.tenant_create(slug="tenant-c", name="Tenant C", owner=owner_c)
    tenants = [world.tenant_a, world.tenant_b, tenant_c]
    for index, tenant in enumerate(tenants):
        for event in range(20):
            record(tenant, agents_a["support"] if tenant == world.tenant_a else None,
                   f"t{index}-{event}", at(2026, 10, 1 + event),
                   audio_out=1_000 * (index + 1))  # fmt: skip
    return tenants


@pytest.fixture
def lockable_database(three_tenants, tmp_path):
    """As in tests/agents/test_admission.py: threads contend for real locks (PostgreSQL as it
    is; SQLite through a file copy with the embedded setup's busy timeout)."""
    connection = connections["default"]
    if connection.vendor != "sqlite":
        yield
        return
    copy = tmp_path / "invoices.sqlite3"
    connection.ensure_connection()
    with sqlite3.connect(copy) as target:
        connection.connection.backup(target)
    database = connections.settings["default"]
    name = database["NAME"]
    database["NAME"] = str(copy)
    try:
        yield
    finally:
        database["NAME"] = name


def in_thread(function):
    result: list = []

    def run() -> None:
        try:
            result.append(function())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    return result[0]


@pytest.mark.django_db(transaction=True)
def test_three_tenants_closing_at_once_get_gapless_unique_numbers(three_tenants, lockable_database):
    gate = threading.Barrier(len(three_tenants))
    issued, failures = [], []

    def close_one(tenant) -> None:
        try:
            gate.wait(timeout=10)
            invoice = close(tenant)
            issued.append((tenant.slug, invoice.number, invoice.sequence))
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=close_one, args=(tenant,)) for tenant in three_tenants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert sorted(sequence for _, _, sequence in issued) == [1, 2, 3]
    assert sorted(number for _, number, _ in issued) == ["INV-000001", "INV-000002", "INV-000003"]
    assert {slug for slug, _, _ in issued} == {"tenant-a", "tenant-b", "tenant-c"}

    def stored():
        with scopes_disabled():
            return (
                sorted(Invoice.objects.values_list("number", "status", "total")),
                list(DocumentCounter.objects.values_list("series", "last_number")),
            )

    invoices, counters = in_thread(stored)
    # 20 × 1,000 × k audio-out tokens at $64/1M: $1.28, $2.56, $3.84
    assert [number for number, _, _ in invoices] == ["INV-000001", "INV-000002", "INV-000003"]
    assert sorted(total for _, _, total in invoices) == [D("1.28"), D("2.56"), D("3.84")]
    assert counters == [("invoice", 3)]
    # Closing again issues nothing and takes no number.
    assert in_thread(lambda: close(three_tenants[0]).sequence) in (1, 2, 3)
    assert in_thread(stored)[1] == [("invoice", 3)]


def test_a_failed_close_gives_its_number_back(world, agents_a):
    record(world.tenant_a, agents_a["support"], "x", at(2026, 10, 3), model="gpt-unknown",
           audio_out=10)  # fmt: skip
    record(world.tenant_b, None, "b", at(2026, 10, 3), audio_out=1_000)
    with pytest.raises(Exception, match="no price"):
        close(world.tenant_a)
    assert close(world.tenant_b).number == "INV-000001"


# --- dates, tax, parties ------------------------------------------------------------------------


def test_issue_copies_parties_dates_and_taxes_the_subtotal(world, october_a, profile_a):
    invoice = close(world.tenant_a)
    today = datetime.now(UTC).date()
    assert (invoice.issue_date, invoice.due_date) == (today, today + timedelta(days=14))
    # Lines: 0.60 + 0.60 (FAQ); Support: audio in 6,000 × 32 = 0.192 → 0.19, audio out
    # 102,000 × 64 = 6.528 → 6.53; cached audio and the text lines → 0.00
    assert invoice.billed_total == sum(line.billed_amount for line in stored_lines(invoice))
    assert invoice.billed_total == D("7.92")
    assert invoice.tax_total == D("1.50")  # 7.92 × 19 % = 1.5048 → 1.50
    assert invoice.total == D("9.42")
    assert invoice.buyer["legal_name"] == "Acme Voice GmbH"
    assert invoice.buyer["tax_id"] == "DE123456789"
    assert invoice.seller["legal_name"] == "VoicePlatform"
    # Changing the profile afterwards changes no issued invoice.
    billing_profile_update(tenant_id=world.tenant_a.pk, actor=world.owner_a,
                           fields={"legal_name": "Someone Else"})  # fmt: skip
    invoice.refresh_from_db()
    assert invoice.buyer["legal_name"] == "Acme Voice GmbH"


def test_reverse_charge_bills_no_tax_and_prints_the_note(world, october_a):
    billing_profile_update(tenant_id=world.tenant_a.pk, actor=None,
                           fields={"tax_mode": "reverse_charge",
                                   "tax_id": "FR12345678901"})  # fmt: skip
    invoice = close(world.tenant_a)
    assert (invoice.tax_total, invoice.total) == (D("0.00"), invoice.billed_total)
    assert invoice.tax_note.startswith("Reverse charge")


# --- status and credit notes ------------------------------------------------------------------


def test_paid_status_and_credit_note_show_in_console_and_audit_log(
    client, world, october_a, profile_a, admin_user
):
    invoice = close(world.tenant_a)  # total 9.42
    note = credit_note_issue(invoice_id=invoice.pk, subtotal=D("2.00"),
                             reason="Outage on 2026-10-09", actor=admin_user)  # fmt: skip
    assert (note.number, note.subtotal, note.tax_total, note.total) == (
        "CN-000001", D("2.00"), D("0.38"), D("2.38"))  # fmt: skip
    assert note.invoice_id == invoice.pk
    paid = invoice_mark_paid(invoice_id=invoice.pk, actor=admin_user)
    assert (paid.status, paid.amount_paid) == ("paid", D("7.04"))  # 9.42 − 2.38
    client.force_login(world.owner_a)
    listing = client.get(reverse("invoice-list", args=["tenant-a"])).content.decode()
    assert "CN-000001" in listing and "Outage on 2026-10-09" in listing
    assert "Paid" in listing
    # Invoiced 9.42 − credited 2.38 − paid 7.04 = 0.00
    assert "<dt>Invoiced</dt><dd>$9.42</dd>" in listing
    assert "<dt>Credited</dt><dd>$2.38</dd>" in listing
    assert "<dt>Paid</dt><dd>$7.04</dd>" in listing
    assert "<dt>Balance due</dt><dd><strong>$0.00</strong></dd>" in listing
    detail = client.get(reverse("invoice-detail", args=["tenant-a", invoice.pk])).content.decode()
    assert 'id="invoice-status" class="badge ok">Paid' in detail and "CN-000001" in detail
    pdf = client.get(reverse("credit-note-pdf", args=["tenant-a", note.pk]))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    with tenant_scope(world.tenant_a):
        events = list(
            AuditEvent.objects.order_by("pk").values_list("action", "actor", "target_label")
        )
    assert events[-3:] == [
        ("invoice.issued", None, "INV-000001"),
        ("credit_note.issued", admin_user.pk, "CN-000001"),
        ("invoice.paid", admin_user.pk, "INV-000001"),
    ]
    audit = client.get(reverse("audit-log", args=["tenant-a"])).content.decode()
    assert (
        "invoice.paid" in audit
        and "credit_note.issued" in audit
        and admin_user.get_username() in audit
    )


def test_status_rules_and_immutability(world, october_a, admin_user):
    invoice = close(world.tenant_a)
    with pytest.raises(InvoiceStateError, match="say why"):
        invoice_void(invoice_id=invoice.pk, actor=admin_user, reason=" ")
    with pytest.raises(InvoiceStateError, match="at most"):
        credit_note_issue(invoice_id=invoice.pk, subtotal=invoice.billed_total + D("0.01"),
                          reason="too much", actor=admin_user)  # fmt: skip
    with pytest.raises(InvoiceStateError, match="cents"):
        credit_note_issue(invoice_id=invoice.pk, subtotal=D("0.001"), reason="x", actor=None)
    void = invoice_void(invoice_id=invoice.pk, actor=admin_user, reason="Issued by mistake")
    assert void.status == "void"
    with pytest.raises(InvoiceStateError):
        invoice_mark_paid(invoice_id=invoice.pk, actor=admin_user)
    with pytest.raises(InvoiceStateError):
        credit_note_issue(invoice_id=invoice.pk, subtotal=D("1"), reason="x", actor=None)
    void.total = D("0")
    with pytest.raises(ValueError, match="immutable"):
        void.save()
    with scopes_disabled():
        assert Invoice.objects.get(pk=invoice.pk).total == invoice.total
        assert not CreditNote.objects.exists()


def test_credit_notes_are_immutable(world, october_a):
    invoice = close(world.tenant_a)
    note = credit_note_issue(invoice_id=invoice.pk, subtotal=D("1.00"), reason="x", actor=None)
    note.total = D("0")
    with pytest.raises(ValueError, match="immutable"):
        note.save()
    with pytest.raises(ValueError, match="immutable"):
        note.delete()


def test_staff_admin_marks_paid_voids_and_issues_credit_notes(client, world, october_a,
                                                              admin_user):  # fmt: skip
    invoice = close(world.tenant_a)
    client.force_login(admin_user)
    changelist = reverse("admin:billing_invoice_changelist")
    page = client.get(changelist).content.decode()
    assert "Margin" in page  # the internal view keeps provider cost and margin
    response = client.post(reverse("admin:billing_creditnote_add"),
                           {"invoice_number": invoice.number, "amount": "1.00",
                            "reason": "Goodwill"})  # fmt: skip
    assert response.status_code == 302
    internal = client.post(changelist, {"action": "download_internal_csv",
                                        "_selected_action": [invoice.pk]})  # fmt: skip
    assert "provider_amount_usd" in internal.content.decode()
    asked = client.post(changelist, {"action": "void", "_selected_action": [invoice.pk]})
    assert b"Reason" in asked.content
    client.post(changelist, {"action": "void", "_selected_action": [invoice.pk], "apply": "1",
                             "reason": "Duplicate"})  # fmt: skip
    invoice.refresh_from_db()
    assert invoice.status == "open"  # it has a credit note: credit the rest instead
    client.post(changelist, {"action": "mark_paid", "_selected_action": [invoice.pk]})
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", invoice.total - D("1.00"))


def test_staff_set_terms_and_tax_in_the_admin_audit_logged(client, world, profile_a, admin_user):
    client.force_login(admin_user)
    url = reverse("admin:billing_tenantbillingprofile_change", args=[profile_a.pk])
    form = {"tenant": world.tenant_a.pk, "legal_name": profile_a.legal_name,
            "address": profile_a.address, "tax_id": "", "billing_email": profile_a.billing_email,
            "currency_display": "symbol", "payment_terms_days": "60",
            "tax_mode": "reverse_charge", "tax_rate_percent": "19", "tax_note": ""}  # fmt: skip
    refused = client.post(url, form)  # reverse charge without the customer's tax id
    assert refused.status_code == 200 and b"Reverse charge needs" in refused.content
    assert client.post(url, {**form, "tax_id": "DE123456789"}).status_code == 302
    with tenant_scope(world.tenant_a):
        profile = TenantBillingProfile.objects.get()
        event = AuditEvent.objects.filter(action="billing_profile.updated").latest("pk")
    assert (profile.payment_terms_days, profile.tax_mode) == (60, "reverse_charge")
    assert event.actor_id == admin_user.pk
    assert event.changes["payment_terms_days"] == {"from": "14", "to": "60"}


# --- the draft ----------------------------------------------------------------------------------


def test_the_draft_equals_the_closed_invoice_line_by_line(world, october_a, profile_a):
    with tenant_scope(world.tenant_a):
        TenantPlan.objects.create(tenant=world.tenant_a, name="Reseller", markup_percent=15)
    PriceBookEntry.objects.create(model="gpt-realtime-2", effective_from=date(2026, 10, 15),
                                  audio_out=D("50"), audio_in=D("30"))  # fmt: skip
    record(world.tenant_a, october_a["support"], "local", at(2026, 10, 5), provider="local",
           audio_in=500)  # fmt: skip
    draft = invoicing.invoice_draft(tenant_id=world.tenant_a.pk, now=at(2026, 10, 31, 23, 59))
    assert draft.event_count == 3  # r3 is at 23:59 exactly: not before "now"
    draft = invoicing.invoice_draft(
        tenant_id=world.tenant_a.pk, now=datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)
    )
    invoice = close(world.tenant_a)
    assert draft.event_count == invoice.event_count == 4
    assert line_tuples(draft.lines) == line_tuples(stored_lines(invoice))
    assert len(draft.lines) >= 8
    assert (draft.totals.subtotal, draft.totals.tax_total, draft.totals.total) == (
        invoice.billed_total, invoice.tax_total, invoice.total)  # fmt: skip
    # Once closed, nothing of October is left on November's draft.
    november = invoicing.invoice_draft(tenant_id=world.tenant_a.pk, now=at(2026, 11, 3))
    assert november.lines == [] and november.totals.total == 0


def test_late_usage_shows_on_the_draft_only_once_last_month_is_closed(world, october_a):
    late = at(2026, 10, 31, 23, 58)
    record(world.tenant_a, october_a["support"], "late", late, audio_out=1_000)
    early_november = at(2026, 11, 1, 0, 30)  # October not closed yet: its invoice takes it
    assert invoicing.invoice_draft(tenant_id=world.tenant_a.pk, now=early_november).lines == []
    close(world.tenant_a)
    record(world.tenant_a, october_a["support"], "later", late, audio_out=1_000)
    draft = invoicing.invoice_draft(tenant_id=world.tenant_a.pk, now=at(2026, 11, 3))
    assert [(line.is_adjustment, line.token_type) for line in draft.lines] == [
        (True, "audio_out")]  # fmt: skip


def test_the_draft_page_shows_the_month_to_date(client, world, agents_a):
    from django.utils import timezone

    record(world.tenant_a, agents_a["support"], "now", timezone.now(), audio_out=100_000)
    client.force_login(world.owner_a)
    page = client.get(reverse("invoice-draft", args=["tenant-a"])).content.decode()
    assert 'id="draft-total">$6.40<' in page and "Support · gpt-realtime-2" in page
    assert "Provider" not in page


# --- the customer PDF -------------------------------------------------------------------------


def pdf_text_and_png(content: bytes, tmp_path) -> tuple[str, str | None, list]:
    """The PDF rendered to PNG by poppler (pdftoppm); its text layer (pdftotext); and what OCR
    reads on the PNG when tesseract is installed (None otherwise)."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils is not installed (.ci/run installs it)")
    source = tmp_path / "invoice.pdf"
    source.write_bytes(content)
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(source), str(tmp_path / "page")],
                   check=True, timeout=60)  # fmt: skip
    pages = sorted(tmp_path.glob("page*.png"))
    text = subprocess.run(["pdftotext", "-layout", str(source), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    seen = None
    if shutil.which("tesseract"):
        seen = "\n".join(
            subprocess.run(["tesseract", str(page), "-", "--psm", "4"], check=True,
                           capture_output=True, text=True, timeout=120).stdout
            for page in pages
        )  # fmt: skip
    return text, seen, pages


def test_the_customer_pdf_renders_with_parties_dates_tax_totals_and_no_provider_cost(
    client, world, october_a, profile_a, tmp_path
):
    from PIL import Image

    issuer = invoicing.issuer_profile_get()
    issuer.legal_name, issuer.tax_id = "Voice Platform Ltd", "GB987654321"
    issuer.address, issuer.payment_details = "1 Platform Way\nLondon", "IBAN GB00 TEST 0000 01"
    issuer.save()
    invoice = close(world.tenant_a)
    client.force_login(world.owner_a)
    response = client.get(reverse("invoice-pdf", args=["tenant-a", invoice.pk]))
    text, seen, pages = pdf_text_and_png(response.content, tmp_path)
    assert len(pages) == 1  # a typical month fits on a page
    with Image.open(pages[0]) as image:
        assert image.size[0] > 1200 and image.size[1] > 1700  # A4 portrait at 150 dpi
        assert image.convert("L").getextrema()[0] < 64  # something dark is drawn
    flat = " ".join(text.split())
    for expected in [
        "From", "Voice Platform Ltd", "1 Platform Way", "GB987654321",  # the seller
        "Bill to", "Acme Voice GmbH", "Hauptstrasse 1", "DE123456789",  # the buyer
        "INV-000001", f"Issue date: {invoice.issue_date}", f"Due date: {invoice.due_date}",
        "October 2026", "Subtotal $7.92", "Tax (19%) $1.50", "Total due $9.42",
        "FAQ · gpt-realtime-mini", "Support · gpt-realtime-2", "IBAN GB00 TEST 0000 01",
        "Payment due by", "Quantity", "Unit price", "Amount",
    ]:  # fmt: skip
        assert expected in flat, expected
    assert "provider" not in flat.lower() and "margin" not in flat.lower()
    # Lines billed $0.00 (cached audio, the text lines) are folded into one row.
    assert "4 further usage lines" in flat
    if seen is not None:  # what is drawn on the page, read back from the PNG
        flat_seen = " ".join(seen.split())
        for expected in ["Invoice INV-000001", "Bill to", "Acme Voice GmbH", "DE123456789",
                         f"Issue date: {invoice.issue_date}", f"Due date: {invoice.due_date}",
                         "Tax (19%)", "$1.50", "Total due", "$9.42", "Subtotal",
                         "$7.92"]:  # fmt: skip
            assert expected in flat_seen, expected
        assert "provider" not in flat_seen.lower()


# --- the finance usage export -----------------------------------------------------------------


def test_the_usage_csv_re_derives_every_invoice_line(client, world, october_a):
    with tenant_scope(world.tenant_a):
        TenantPlan.objects.create(tenant=world.tenant_a, name="Reseller", markup_percent=15)
    entry = PriceBookEntry.objects.create(model="gpt-realtime-2", effective_from=date(2026, 10, 15),
                                          audio_out=D("50"))  # fmt: skip
    invoice = close(world.tenant_a)
    client.force_login(world.owner_a)
    response = client.get(reverse("billing-usage-billable", args=["tenant-a"]) + "?month=2026-10")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {row["upstream_response_id"] for row in rows} == {"r1", "r2", "r3"}
    r3 = [row for row in rows if row["upstream_response_id"] == "r3"]
    assert [(row["token_type"], row["price_entry_id"], row["price_effective_from"])
            for row in r3] == [("audio_out", str(entry.pk), "2026-10-15")]  # fmt: skip
    # A spreadsheet's SUMIF: quantities per line × unit price, rounded half-up to the cent.
    quantities: dict[tuple, Decimal] = defaultdict(Decimal)
    prices: dict[tuple, tuple] = {}
    for row in rows:
        key = (row["invoice"], row["usage_month"], row["agent_id"], row["model"],
               row["provider"], row["kind"], row["price_effective_from"],
               row["token_type"])  # fmt: skip
        quantities[key] += Decimal(row["quantity"])
        prices[key] = (Decimal(row["unit_price_usd"]), row["price_unit"], row["invoice_line"])
    derived = []
    for key, quantity in quantities.items():
        unit_price, price_unit, position = prices[key]
        divisor = D(1_000_000) if price_unit == "1M tokens" else D(60)
        amount = (quantity * unit_price / divisor).quantize(D("0.01"), rounding=ROUND_HALF_UP)
        derived.append((int(position), key[-1], quantity, amount))
    lines = stored_lines(invoice)
    assert sorted(derived) == [
        (line.position, line.token_type, line.quantity, line.billed_amount) for line in lines
    ]
    assert "provider_cost" not in response.get("Content-Disposition", "") + ",".join(rows[0])
    bad = client.get(reverse("billing-usage-billable", args=["tenant-a"]) + "?month=October")
    assert bad.status_code == 400
    per_invoice = client.get(reverse("invoice-usage-csv", args=["tenant-a", invoice.pk]))
    assert len(list(csv.DictReader(io.StringIO(
        b"".join(per_invoice.streaming_content).decode())))) == len(rows)  # fmt: skip


# --- the tenant's billing profile ---------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "finance"])
def test_owners_and_finance_edit_the_billing_profile_audit_logged(client, world, role):
    user = world.owner_a
    if role == "finance":
        user = tenant_services.user_get_or_create(email="fin@example.com", password=world.password)
        tenant_services.membership_set(tenant=world.tenant_a, user=user, role=role)
    client.force_login(user)
    url = reverse("billing-profile", args=["tenant-a"])
    assert client.get(url).status_code == 200
    form = {"legal_name": "Acme <b>Voice</b>", "address": "1 Road", "tax_id": "ATU1234567",
            "billing_email": "ap@acme.example", "currency_display": "code",
            # Terms and tax are the platform's: posted by a tenant, they are ignored.
            "payment_terms_days": "1", "tax_mode": "rate", "tax_rate_percent": "0"}  # fmt: skip
    assert client.post(url, {**form, "billing_email": "not an address"}).status_code == 200
    with tenant_scope(world.tenant_a):
        assert not TenantBillingProfile.objects.exists()
    assert client.post(url, form).status_code == 302
    with tenant_scope(world.tenant_a):
        profile = TenantBillingProfile.objects.get()
        event = AuditEvent.objects.filter(action="billing_profile.updated").get()
    assert (profile.payment_terms_days, profile.tax_rate_percent, profile.currency_display) == (
        30, D("0"), "code")  # fmt: skip
    assert event.actor_id == user.pk and event.changes["tax_id"] == {"from": "", "to": "ATU1234567"}
    assert "payment_terms_days" not in event.changes
    # Under reverse charge (set by staff) the tax id cannot be removed.
    billing_profile_update(tenant_id=world.tenant_a.pk, actor=None,
                           fields={"tax_mode": "reverse_charge"})  # fmt: skip
    refused = client.post(url, {**form, "tax_id": ""})
    assert refused.status_code == 200 and "needs your tax ID" in refused.content.decode()
    with tenant_scope(world.tenant_a):
        assert TenantBillingProfile.objects.get().tax_id == "ATU1234567"
    page = client.get(url).content.decode()
    assert "Acme &lt;b&gt;Voice&lt;/b&gt;" in page


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_other_roles_cannot_see_or_change_the_billing_profile(client, world, role):
    user = tenant_services.user_get_or_create(email=f"{role}@example.com", password=world.password)
    tenant_services.membership_set(tenant=world.tenant_a, user=user, role=role)
    client.force_login(user)
    url = reverse("billing-profile", args=["tenant-a"])
    assert client.get(url).status_code == 403
    assert client.post(url, {"legal_name": "Hijack", "payment_terms_days": "1"}).status_code == 403
    with tenant_scope(world.tenant_a):
        assert not TenantBillingProfile.objects.exists()
        assert not AuditEvent.objects.filter(action="billing_profile.updated").exists()
