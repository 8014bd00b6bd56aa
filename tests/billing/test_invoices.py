"""Closing a month: lines, totals by hand, idempotency, late events, immutability."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from billing.models import Invoice, InvoiceLine, PriceBookEntry, TenantPlan, UsageEvent
from billing.services import MonthNotOver, invoice_close_month, invoices_close_previous_month
from tenants.scoping import tenant_scope
from tests.billing.conftest import at, record

OCTOBER = date(2026, 10, 1)
NOVEMBER = date(2026, 11, 1)
AFTER_OCTOBER = at(2026, 11, 2)
AFTER_NOVEMBER = at(2026, 12, 2)


@pytest.fixture
def october(world, agents_a):
    support, faq = agents_a["support"], agents_a["faq"]
    tenant = world.tenant_a
    # Support on gpt-realtime-2: two responses (one cancelled: billed all the same).
    record(tenant, support, "r1", at(2026, 10, 3), audio_in=10_000, cached_audio=4_000,
           audio_out=2_000, text_in=1_000, cached_text=500, text_out=200)  # fmt: skip
    record(tenant, support, "r2", at(2026, 10, 20), audio_in=5_000, audio_out=1_000,
           status="cancelled", image_in=2_000, cached_image=1_000)  # fmt: skip
    # FAQ on gpt-realtime-mini.
    record(tenant, faq, "r3", at(2026, 10, 31, 23, 59), audio_in=1_000_000, audio_out=250_000)
    # Not October: September is left to its own invoice, November to the next one.
    record(tenant, support, "r4", at(2026, 11, 1, 0, 0), audio_out=1_000_000)
    record(world.tenant_b, None, "rb", at(2026, 10, 5), audio_out=1_000_000)
    return agents_a


def lines_of(invoice):
    with tenant_scope(invoice.tenant_id):
        return [
            (line.agent_name, line.model, line.token_type, line.quantity, line.unit_price,
             line.amount, line.is_adjustment)
            for line in InvoiceLine.objects.filter(invoice=invoice).order_by("position")
        ]  # fmt: skip


def test_october_invoice_lines_and_totals_by_hand(world, october):
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    assert invoice.status == Invoice.Status.OPEN
    assert invoice.number == "INV-000001"  # the issuer's first invoice
    today = datetime.now(UTC).date()
    assert (invoice.issue_date, invoice.due_date) == (today, today + timedelta(30))
    assert invoice.event_count == 3
    D = Decimal
    assert lines_of(invoice) == [
        # FAQ sorts before Support. 1M × 0.60 = 0.60; 250k × 2.40 = 0.60
        ("FAQ", "gpt-realtime-mini", "audio_in", D(1_000_000), D("0.6"), D("0.60"), False),
        ("FAQ", "gpt-realtime-mini", "audio_out", D(250_000), D("2.4"), D("0.60"), False),
        # 500 × 4 = 0.002 → 0.00; 500 × 0.40 = 0.0002 → 0.00; 200 × 24 = 0.0048 → 0.00
        ("Support", "gpt-realtime-2", "text_in", D(500), D(4), D("0.00"), False),
        ("Support", "gpt-realtime-2", "text_cached", D(500), D("0.4"), D("0.00"), False),
        ("Support", "gpt-realtime-2", "text_out", D(200), D(24), D("0.00"), False),
        # (6,000 + 5,000) × 32 = 0.352 → 0.35; 4,000 × 0.40 = 0.0016 → 0.00;
        # (2,000 + 1,000) × 64 = 0.192 → 0.19
        ("Support", "gpt-realtime-2", "audio_in", D(11_000), D(32), D("0.35"), False),
        ("Support", "gpt-realtime-2", "audio_cached", D(4_000), D("0.4"), D("0.00"), False),
        ("Support", "gpt-realtime-2", "audio_out", D(3_000), D(64), D("0.19"), False),
        # 1,000 × 5 = 0.005 → 0.01 (half-up); 1,000 × 0.50 = 0.0005 → 0.00
        ("Support", "gpt-realtime-2", "image_in", D(1_000), D(5), D("0.01"), False),
        ("Support", "gpt-realtime-2", "image_cached", D(1_000), D("0.5"), D("0.00"), False),
    ]
    # Totals are the sums of the rounded lines: 0.60 + 0.60 + 0.35 + 0.19 + 0.01
    assert invoice.provider_total == Decimal("1.75")
    assert invoice.billed_total == Decimal("1.75")
    with tenant_scope(world.tenant_a):
        billed = UsageEvent.objects.filter(invoice=invoice)
        billed = set(billed.values_list("upstream_response_id", flat=True))
    assert billed == {"r1", "r2", "r3"}


def test_totals_equal_an_independent_computation_from_the_events(world, october):
    from billing.selectors import event_cost

    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    with tenant_scope(world.tenant_a):
        events = list(UsageEvent.objects.filter(invoice=invoice))
    exact = sum(event_cost(event) for event in events)
    # r1: 0.002 + 0.0002 + 0.0048 + 0.192 + 0.0016 + 0.128 = 0.3286
    # r2: 0.16 + 0.064 + 0.005 + 0.0005 = 0.2295; r3: 0.60 + 0.60 = 1.20
    assert exact == Decimal("0.3286") + Decimal("0.2295") + Decimal("1.20") == Decimal("1.7581")
    # Rounding per line moves the total by at most half a cent per line.
    assert abs(invoice.provider_total - exact) <= Decimal("0.005") * len(lines_of(invoice))


def test_closing_twice_changes_nothing(world, october):
    first = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    before = (lines_of(first), first.provider_total, first.billed_total, first.issued_at)
    again = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    assert again.pk == first.pk
    again.refresh_from_db()
    assert (lines_of(again), again.provider_total, again.billed_total, again.issued_at) == before
    with tenant_scope(world.tenant_a):
        assert Invoice.objects.count() == 1


def test_issued_invoices_are_immutable(world, october):
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    invoice.billed_total = Decimal("0.01")
    with pytest.raises(ValueError, match="immutable"):
        invoice.save()
    with tenant_scope(world.tenant_a):
        line = InvoiceLine.objects.filter(invoice=invoice).first()
        line.amount = Decimal("99")
        with pytest.raises(ValueError, match="immutable"):
            line.save()
    with pytest.raises(ValueError, match="immutable"):
        invoice.delete()


def test_a_late_event_lands_on_the_next_invoice_as_an_adjustment(world, october):
    support = october["support"]
    issued = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    # Usage of October 31 recorded after October's invoice was issued.
    record(world.tenant_a, support, "late", at(2026, 10, 31, 23, 58), audio_out=100_000)
    again = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    assert (again.pk, again.provider_total, again.event_count) == (issued.pk, Decimal("1.75"), 3)
    november = invoice_close_month(tenant_id=world.tenant_a.pk, month=NOVEMBER,
                                   now=AFTER_NOVEMBER)  # fmt: skip
    with tenant_scope(world.tenant_a):
        lines = list(InvoiceLine.objects.filter(invoice=november).order_by("position"))
    # November's own usage first (r4: 1M audio out = $64), then the adjustment (100k × 64 = 6.40).
    assert [(line.is_adjustment, line.usage_month, line.amount) for line in lines] == [
        (False, NOVEMBER, Decimal("64.00")),
        (True, OCTOBER, Decimal("6.40")),
    ]
    assert lines[1].description.startswith("Adjustment for 2026-10: Support")
    assert november.provider_total == Decimal("70.40")
    assert november.event_count == 2


def test_markup_applies_to_billed_amounts_line_by_line(world, october):
    with tenant_scope(world.tenant_a):
        TenantPlan.objects.create(tenant=world.tenant_a, name="Reseller", markup_percent=15)
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    with tenant_scope(world.tenant_a):
        billed = [line.billed_amount for line in InvoiceLine.objects.filter(invoice=invoice)
                  .order_by("position")]  # fmt: skip
    # 0.60 × 1.15 = 0.69 (twice); 0.352 × 1.15 = 0.4048 → 0.40; 0.0016 × 1.15 → 0.00;
    # 0.192 × 1.15 = 0.2208 → 0.22; 0.005 × 1.15 = 0.00575 → 0.01; text lines → 0.00
    assert billed == [Decimal(v) for v in ("0.69", "0.69", "0.00", "0.00", "0.01", "0.40",
                                           "0.00", "0.22", "0.01", "0.00")]  # fmt: skip
    assert (invoice.plan_name, invoice.markup_percent) == ("Reseller", Decimal("15"))
    assert invoice.provider_total == Decimal("1.75")
    assert invoice.billed_total == Decimal("2.02")


def test_a_price_change_mid_month_splits_the_lines(world, agents_a):
    support = agents_a["support"]
    PriceBookEntry.objects.create(model="gpt-realtime-2", effective_from=date(2026, 10, 15),
                                  audio_out=Decimal("50"))  # fmt: skip
    record(world.tenant_a, support, "before", at(2026, 10, 14, 23, 59), audio_out=100_000)
    record(world.tenant_a, support, "after", at(2026, 10, 15, 0, 0), audio_out=100_000)
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    with tenant_scope(world.tenant_a):
        lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("position"))
    assert [(line.unit_price, line.amount, line.price_effective_from) for line in lines][-1] == (
        Decimal("50"),
        Decimal("5.00"),
        date(2026, 10, 15),
    )
    assert [line.amount for line in lines] == [Decimal("6.40"), Decimal("5.00")]


def test_local_engine_usage_is_listed_at_zero(world, agents_a):
    record(world.tenant_a, agents_a["support"], "local1", at(2026, 10, 3), provider="local",
           audio_in=1000, audio_out=500)  # fmt: skip
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    assert [(row[2], row[4], row[5]) for row in lines_of(invoice)] == [
        ("audio_in", Decimal(0), Decimal("0.00")),
        ("audio_out", Decimal(0), Decimal("0.00")),
    ]
    assert invoice.billed_total == Decimal("0.00")


def test_per_minute_models_bill_audio_seconds(world):
    from agents.configuration import agent_create

    scribe = agent_create(tenant=world.tenant_a, actor=None, fields={
        "name": "Scribe", "kind": "transcription", "model": "gpt-realtime-whisper"})  # fmt: skip
    record(world.tenant_a, scribe, "s:1", at(2026, 10, 3), audio_ms=90_500)
    record(world.tenant_a, scribe, "s:2", at(2026, 10, 4), audio_ms=1_709_500)
    invoice = invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER)
    # 1,800 s = 30 minutes × $0.017 = $0.51
    assert [(row[2], row[3], row[4], row[5]) for row in lines_of(invoice)] == [
        ("audio_seconds", Decimal("1800.000"), Decimal("0.017"), Decimal("0.51"))
    ]


def test_open_months_cannot_be_closed_and_empty_ones_make_no_invoice(world):
    with pytest.raises(MonthNotOver):
        invoice_close_month(tenant_id=world.tenant_a.pk, month=NOVEMBER, now=at(2026, 11, 30))
    assert (
        invoice_close_month(tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER) is None
    )


def test_beat_closes_last_month_for_every_tenant_once(world, october):
    # Within the first hour of November, the last responses of October may still be written.
    assert invoices_close_previous_month(now=at(2026, 11, 1, 0, 30)) == {"closed": 0, "failed": 0}
    assert invoices_close_previous_month(now=AFTER_OCTOBER) == {"closed": 2, "failed": 0}
    assert invoices_close_previous_month(now=AFTER_OCTOBER) == {"closed": 0, "failed": 0}
    with tenant_scope(world.tenant_b):
        assert Invoice.objects.get().billed_total == Decimal("64.00")


def test_unpriced_models_fail_the_close_loudly(world, agents_a):
    record(world.tenant_a, agents_a["support"], "x", at(2026, 10, 3), model="gpt-unknown",
           audio_out=10)  # fmt: skip
    assert invoices_close_previous_month(now=AFTER_OCTOBER) == {"closed": 0, "failed": 1}
    with tenant_scope(world.tenant_a):
        assert not Invoice.objects.exists()
        assert UsageEvent.objects.get().invoice_id is None


def test_close_month_command(world, october, capsys):
    call_command("close_month", "--tenant", "tenant-a", "--month", "2026-10")
    out = capsys.readouterr().out
    assert "INV-000001: open, 3 events, provider cost $1.75, billed $1.75, total $1.75" in out
    call_command("close_month", "--tenant", "tenant-a", "--month", "2026-10")
    assert "provider cost $1.75" in capsys.readouterr().out
    with pytest.raises(CommandError):
        call_command("close_month", "--tenant", "tenant-a", "--month", "October")
    with pytest.raises(CommandError):
        call_command("close_month", "--tenant", "nope", "--month", "2026-10")


@pytest.mark.django_db(transaction=True)
def test_two_closes_at_once_issue_one_invoice_on_postgresql(world, agents_a):
    import threading

    from django.db import connection

    from tests.conftest import require_service

    require_service("PostgreSQL", "127.0.0.1", 5432)
    if connection.vendor != "postgresql":
        pytest.skip("concurrency needs PostgreSQL (DATABASE_URL)")
    for index in range(50):
        record(world.tenant_a, agents_a["support"], f"r{index}", at(2026, 10, 1 + index % 28),
               audio_out=1_000)  # fmt: skip
    barrier, results, errors = threading.Barrier(3), [], []

    def close():
        try:
            barrier.wait()
            invoice = invoice_close_month(
                tenant_id=world.tenant_a.pk, month=OCTOBER, now=AFTER_OCTOBER
            )
            results.append((invoice.pk, invoice.provider_total, invoice.event_count))
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=close) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # 50 × 1,000 audio out × $64 / 1M = $3.20, once.
    assert len(set(results)) == 1 and results[0][1:] == (Decimal("3.20"), 50)
    with tenant_scope(world.tenant_a):
        assert Invoice.objects.count() == 1
        assert InvoiceLine.objects.count() == 1
