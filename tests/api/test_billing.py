"""Usage and invoices over the REST API: the console's figures, CSV and PDF, isolation."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from pypdf import PdfReader

from billing.selectors import usage_summary
from billing.services import invoice_close_month, tally_sweep
from tests.api.conftest import error_of
from tests.billing.conftest import agents_a, at, record  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

OCTOBER = date(2026, 10, 1)


@pytest.fixture
def usage_a(world, agents_a):  # noqa: F811
    support, faq = agents_a["support"], agents_a["faq"]
    record(world.tenant_a, support, "r1", at(2026, 10, 3), audio_in=10_000, audio_out=2_000)
    record(world.tenant_a, faq, "r2", at(2026, 10, 9), audio_in=1_000_000, audio_out=250_000)
    record(world.tenant_a, support, "r3", at(2026, 10, 9), text_in=500, text_out=100)
    tally_sweep()
    return agents_a


def test_usage_by_day_agent_and_model_adds_up_to_the_console(api_a, world, usage_a):
    query = {"start": "2026-10-01", "end": "2026-10-31"}
    by_day = api_a.get("/api/v1/usage", query={**query, "group_by": "day"})
    assert by_day.status == 200, by_day.body
    summary = usage_summary(tenant_id=world.tenant_a.pk, start=OCTOBER, end=date(2026, 10, 31))
    assert Decimal(by_day.body["billed_usd"]) == summary.billed.quantize(Decimal("0.000001"))
    days = by_day.body["data"]
    assert len(days) == 31 and days[0]["day"] == "2026-10-01"
    assert [d["day"] for d in days if d["responses"]] == ["2026-10-03", "2026-10-09"]
    assert next(d for d in days if d["day"] == "2026-10-09")["responses"] == 2
    by_agent = api_a.get("/api/v1/usage", query={**query, "group_by": "agent"}).body["data"]
    assert {row["agent_name"]: row["responses"] for row in by_agent} == {"Support": 2, "FAQ": 1}
    by_model = api_a.get("/api/v1/usage", query={**query, "group_by": "model"}).body["data"]
    assert {row["model"]: row["responses"] for row in by_model} == {
        "gpt-realtime-2": 2, "gpt-realtime-mini": 1,
    }  # fmt: skip
    total = sum(Decimal(row["billed_usd"]) for row in by_model)
    assert total == Decimal(by_day.body["billed_usd"])
    assert Decimal(by_day.body["billed_usd"]) > 0


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"start": "2026-10-10", "end": "2026-10-01"}, "end"),
        ({"start": "2024-01-01", "end": "2026-01-01"}, "end"),
        ({"start": "October"}, "start"),
    ],
)
def test_usage_bad_ranges_are_400(api_a, query, param):
    answer = api_a.get("/api/v1/usage", query=query)
    assert (answer.status, error_of(answer)["param"]) == (400, param)


def test_invoices_list_detail_csv_pdf(api_a, world, usage_a):
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=at(2026, 11, 2))
    listed = api_a.get("/api/v1/invoices").body["data"]
    assert [(row["id"], row["number"], row["month"]) for row in listed] == [
        (invoice.pk, invoice.number, "2026-10-01")
    ]
    detail = api_a.get(f"/api/v1/invoices/{invoice.pk}").body
    assert Decimal(detail["subtotal_usd"]) == invoice.billed_total
    assert Decimal(detail["total_usd"]) == Decimal(detail["balance_usd"]) == invoice.total
    assert (detail["status"], detail["issue_date"]) == ("open", str(invoice.issue_date))
    assert "provider_total_usd" not in detail
    assert sum(Decimal(line["amount_usd"]) for line in detail["lines"]) == (invoice.billed_total)
    as_csv = api_a.get(f"/api/v1/invoices/{invoice.pk}/csv")
    assert as_csv.status == 200 and as_csv.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.content.decode())))
    assert any(invoice.number in cell for row in rows for cell in row)
    as_pdf = api_a.get(f"/api/v1/invoices/{invoice.pk}/pdf")
    assert as_pdf.status == 200 and as_pdf.headers["Content-Type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(as_pdf.content)).pages)
    assert invoice.number in text


def test_another_tenants_invoices_and_usage_stay_theirs(api_b, world, usage_a):
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=at(2026, 11, 2))
    for suffix in ("", "/csv", "/pdf"):
        answer = api_b.get(f"/api/v1/invoices/{invoice.pk}{suffix}")
        assert (answer.status, error_of(answer)["code"]) == (404, "invoice_not_found")
    assert api_b.get("/api/v1/invoices").body["data"] == []
    usage = api_b.get("/api/v1/usage", query={"start": "2026-10-01", "end": "2026-10-31"}).body
    assert Decimal(usage["billed_usd"]) == 0
    assert all(row["responses"] == 0 for row in usage["data"])
