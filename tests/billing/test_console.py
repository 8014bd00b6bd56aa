"""Finance pages and exports: owner and finance only, tenant-scoped, figures equal the invoice."""

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from billing.models import SpendCap
from billing.services import invoice_close_month, tally_sweep
from tenants import services as tenant_services
from tenants.scoping import scopes_disabled, tenant_scope
from tests.billing.conftest import at, record

OCTOBER = date(2026, 10, 1)


def user_with_role(world, role):
    if role == "owner":
        return world.owner_a
    user = tenant_services.user_get_or_create(email=f"{role}-a@example.com",
                                              password=world.password)  # fmt: skip
    tenant_services.membership_set(tenant=world.tenant_a, user=user, role=role)
    return user


@pytest.fixture
def invoiced(world, agents_a):
    support, faq = agents_a["support"], agents_a["faq"]
    record(world.tenant_a, support, "r1", at(2026, 10, 3), audio_in=10_000, cached_audio=4_000,
           audio_out=2_000)  # fmt: skip
    record(world.tenant_a, faq, "r2", at(2026, 10, 9), audio_in=1_000_000, audio_out=250_000)
    record(world.tenant_a, support, "r3", timezone.now(), audio_out=1_000)
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER,
                                  now=at(2026, 11, 2))  # fmt: skip
    tally_sweep()
    return invoice


def finance_urls(invoice):
    args = ["tenant-a"]
    return [
        reverse("billing-usage", args=args),
        reverse("billing-usage", args=args) + "?start=2026-10-01&end=2026-10-31",
        reverse("invoice-list", args=args),
        reverse("invoice-detail", args=[*args, invoice.pk]),
        reverse("invoice-csv", args=[*args, invoice.pk]),
        reverse("invoice-pdf", args=[*args, invoice.pk]),
        reverse("billing-usage-export", args=args) + "?start=2026-10-01&end=2026-10-31",
    ]


@pytest.mark.parametrize("role", ["owner", "finance"])
def test_finance_pages_render_for_owner_and_finance(client, world, invoiced, role):
    client.force_login(user_with_role(world, role))
    for url in finance_urls(invoiced):
        response = client.get(url)
        assert response.status_code == 200, url
    october = "?start=2026-10-01&end=2026-10-31"
    page = client.get(reverse("billing-usage", args=["tenant-a"]) + october)
    body = page.content.decode()
    assert "<svg" in body and "gpt-realtime-mini" in body and "Support" in body
    # No plan: billed equals provider cost, and the page says which it shows (billed only).
    assert "$1.52</span><span>billed, Oct 1, 2026–Oct 31, 2026" in body  # to the cent
    assert "provider cost" not in body.lower()  # the platform's own cost: staff only
    assert "$0.3216" in body and "$1.2000" in body  # the daily rows, exact
    assert 'href="/t/tenant-a/invoices/"' in body  # the sidebar link
    detail = client.get(reverse("invoice-detail", args=["tenant-a", invoiced.pk])).content.decode()
    assert "INV-000001" in detail and "$1.52" in detail and "1000000 tokens" in detail
    assert "Provider" not in detail and "provider cost" not in detail.lower()


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_other_roles_get_403_and_no_sidebar_link(client, world, invoiced, role):
    client.force_login(user_with_role(world, role))
    for url in finance_urls(invoiced):
        assert client.get(url).status_code == 403, url
    response = client.post(reverse("billing-spend-cap", args=["tenant-a"]),
                           {"target": "agent:1", "daily_limit_usd": "5"})  # fmt: skip
    assert response.status_code == 403
    dashboard = client.get(reverse("tenant-dashboard", args=["tenant-a"])).content.decode()
    assert "/usage/" not in dashboard and "/invoices/" not in dashboard


def test_invoice_csv_columns_and_totals_equal_the_invoice(client, world, invoiced):
    client.force_login(world.owner_a)
    response = client.get(reverse("invoice-csv", args=["tenant-a", invoiced.pk]))
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert list(rows[0]) == [  # the customer's: billed prices, no provider cost
        "invoice", "issue_date", "due_date", "month", "line", "adjustment", "usage_month",
        "agent_id", "agent", "model", "provider", "token_type", "description", "quantity",
        "quantity_unit", "unit_price_usd", "price_unit", "price_effective_from", "amount_usd",
    ]  # fmt: skip
    lines, (subtotal, tax, total) = rows[:-3], rows[-3:]
    assert [row["token_type"] for row in lines] == [
        "audio_in",
        "audio_out",
        "audio_in",
        "audio_cached",
        "audio_out",
    ]
    assert sum(Decimal(row["amount_usd"]) for row in lines) == invoiced.billed_total
    assert [row["description"] for row in (subtotal, tax, total)] == [
        "SUBTOTAL", "TAX (0%)", "TOTAL"]  # fmt: skip
    assert Decimal(total["amount_usd"]) == invoiced.total == Decimal("1.52")
    for row in lines:  # every amount is its quantity × unit price, rounded half-up
        exact = Decimal(row["quantity"]) * Decimal(row["unit_price_usd"]) / 1_000_000
        assert Decimal(row["amount_usd"]) == exact.quantize(
            Decimal("0.01"), rounding="ROUND_HALF_UP"
        )


def test_invoice_pdf_opens_and_shows_the_total(client, world, invoiced):
    client.force_login(user_with_role(world, "finance"))
    response = client.get(reverse("invoice-pdf", args=["tenant-a", invoiced.pk]))
    assert response["Content-Type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert "Invoice INV-000001" in text
    assert "Total due" in text and "$1.52" in text


def test_usage_export_streams_the_events_of_the_range(client, world, invoiced):
    client.force_login(world.owner_a)
    url = reverse("billing-usage-export", args=["tenant-a"]) + "?start=2026-10-01&end=2026-10-31"
    response = client.get(url)
    assert response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["upstream_response_id"] for row in rows] == ["r1", "r2"]
    assert [Decimal(row["billed_usd"]) for row in rows] == [Decimal("0.3216"),
                                                             Decimal("1.2")]  # fmt: skip
    assert "provider_cost_usd" not in rows[0]  # staff only
    assert rows[0]["invoice"] == str(invoiced.pk)
    bad = client.get(reverse("billing-usage-export", args=["tenant-a"]) + "?start=nope")
    assert bad.status_code == 400


def test_another_tenants_invoice_answers_404_like_a_missing_one(client, world, invoiced):
    record(world.tenant_b, None, "rb", at(2026, 10, 5), audio_out=1_000)
    invoice_b = invoice_close_month(tenant_id=world.tenant_b.pk, month=OCTOBER,
                                    now=at(2026, 11, 2))  # fmt: skip
    client.force_login(world.owner_a)
    for name in ("invoice-detail", "invoice-csv", "invoice-pdf"):
        assert client.get(reverse(name, args=["tenant-a", invoice_b.pk])).status_code == 404
        assert client.get(reverse(name, args=["tenant-a", 999_999])).status_code == 404
        assert client.get(reverse(name, args=["tenant-b", invoice_b.pk])).status_code == 404
    # B's usage never shows in A's export.
    url = reverse("billing-usage-export", args=["tenant-a"]) + "?start=2026-10-01&end=2026-10-31"
    body = b"".join(client.get(url).streaming_content).decode()
    assert "rb" not in body.split()


def test_spend_caps_are_set_and_removed_from_the_usage_page(client, world, agents_a):
    client.force_login(user_with_role(world, "finance"))
    url = reverse("billing-spend-cap", args=["tenant-a"])
    support = agents_a["support"]
    response = client.post(url, {"target": f"agent:{support.pk}", "daily_limit_usd": "12.345"})
    assert response.status_code == 302
    with tenant_scope(world.tenant_a):
        assert SpendCap.objects.get(agent=support).daily_limit_usd == Decimal("12.35")
    page = client.get(reverse("billing-usage", args=["tenant-a"])).content.decode()
    assert "$12.35" in page
    client.post(url, {"target": f"agent:{support.pk}", "daily_limit_usd": "-1"})
    client.post(url, {"target": f"agent:{support.pk}", "daily_limit_usd": "lots"})
    with tenant_scope(world.tenant_a):
        assert SpendCap.objects.get(agent=support).daily_limit_usd == Decimal("12.35")
    client.post(url, {"target": f"agent:{support.pk}", "daily_limit_usd": ""})
    with tenant_scope(world.tenant_a):
        assert not SpendCap.objects.exists()


def test_spend_caps_cannot_target_another_tenants_agent(client, world, agents_a):
    from agents.configuration import agent_create

    agent_b = agent_create(tenant=world.tenant_b, actor=None, fields={"name": "B"})
    widget_b = tenant_services.widget_key_create(tenant=world.tenant_b, name="B",
                                                 allowed_origins=["https://b.example"])  # fmt: skip
    client.force_login(world.owner_a)
    url = reverse("billing-spend-cap", args=["tenant-a"])
    for target in (f"agent:{agent_b.pk}", f"widget_key:{widget_b.pk}", "agent:x"):
        response = client.post(url, {"target": target, "daily_limit_usd": "1"})
        assert response.status_code == 404, target
    with scopes_disabled():
        assert not SpendCap.objects.exists()


HOSTILE_NAME = '<img src="x"/> R&D <beta> <a href="javascript:alert(1)">click</a>'


def test_invoice_pdf_shows_tenant_strings_as_text_never_markup(client, world, agents_a):
    """An agent named with ReportLab markup neither breaks the PDF nor becomes a link
    (issue 13.8): every tenant-controlled string is escaped."""
    support = agents_a["support"]
    with tenant_scope(world.tenant_a):
        type(support).objects.filter(pk=support.pk).update(name=HOSTILE_NAME)
    with scopes_disabled():
        type(world.tenant_a).objects.filter(pk=world.tenant_a.pk).update(name="Acme & <Sons>")
    record(world.tenant_a, support, "r1", at(2026, 10, 3), audio_out=2_000)
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=at(2026, 11, 2))
    client.force_login(user_with_role(world, "finance"))
    response = client.get(reverse("invoice-pdf", args=["tenant-a", invoice.pk]))
    assert response.status_code == 200
    reader = PdfReader(io.BytesIO(response.content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "R&D <beta>" in text
    assert "Acme & <Sons>" in text
    assert '<a href="javascript:alert(1)">click</a>' in text
    links = [annotation for page in reader.pages for annotation in page.get("/Annots") or []]
    assert links == []
