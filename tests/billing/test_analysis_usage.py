"""Post-call analysis in the ledger: its own kind, priced by the text model's price book row,
its own invoice lines, and in the tallies and the month's spend like any other usage."""

from datetime import date
from decimal import Decimal

from billing.models import InvoiceLine, UsageEvent, UsageTally
from billing.selectors import tenant_month_spend
from billing.services import invoice_close_month, tally_recompute_day, usage_event_record
from tenants.scoping import tenant_scope
from tests.billing.conftest import at, record

OCTOBER = date(2026, 10, 1)


def analysis_event(tenant, agent, key, when, *, text_in, cached_text, text_out):
    """A Responses API call recorded as the analysis service records it."""
    return usage_event_record(
        tenant_id=tenant.pk, session_id=None, agent_id=agent.pk, provider="openai",
        kind=UsageEvent.Kind.ANALYSIS, model="gpt-5-mini", key=key, status="completed",
        usage={"input_token_details": {"text_tokens": text_in,
                                       "cached_tokens_details": {"text_tokens": cached_text}},
               "output_token_details": {"text_tokens": text_out}},
        audio_ms=0, occurred_at=when,
    )  # fmt: skip


def test_analysis_is_its_own_invoice_line_and_the_totals_add_up(world, agents_a):
    tenant, support = world.tenant_a, agents_a["support"]
    record(tenant, support, "r1", at(2026, 10, 3), audio_in=1_000_000, audio_out=250_000)
    assert analysis_event(tenant, support, "analysis:1:1", at(2026, 10, 3),
                          text_in=4_000_000, cached_text=400_000, text_out=500_000)  # fmt: skip
    # The same key again (a redelivered task) is not billed twice.
    assert not analysis_event(tenant, support, "analysis:1:1", at(2026, 10, 3),
                              text_in=4_000_000, cached_text=400_000, text_out=500_000)  # fmt: skip
    with tenant_scope(tenant):
        kinds = dict(UsageEvent.objects.values_list("upstream_response_id", "kind"))
    assert kinds == {"r1": "realtime", "analysis:1:1": "analysis"}

    invoice = invoice_close_month(tenant_id=tenant.pk, month=OCTOBER, now=at(2026, 11, 2))
    with tenant_scope(tenant):
        lines = [
            (line.description, line.quantity, line.unit_price, line.amount)
            for line in InvoiceLine.objects.filter(invoice=invoice).order_by("position")
        ]
    D = Decimal
    assert lines == [
        # 1M × 32 = 32.00; 250k × 64 = 16.00
        ("Support · gpt-realtime-2 · Audio input", D(1_000_000), D(32), D("32.00")),
        ("Support · gpt-realtime-2 · Audio output", D(250_000), D(64), D("16.00")),
        # 3.6M × 0.25 = 0.90; 400k × 0.025 = 0.01; 500k × 2.00 = 1.00
        ("Support · gpt-5-mini · Post-call analysis · Text input", D(3_600_000), D("0.25"),
         D("0.90")),
        ("Support · gpt-5-mini · Post-call analysis · Text input, cached", D(400_000),
         D("0.025"), D("0.01")),
        ("Support · gpt-5-mini · Post-call analysis · Text output", D(500_000), D(2), D("1.00")),
    ]  # fmt: skip
    assert invoice.provider_total == D("49.91")
    assert invoice.event_count == 2
    # The month's spend (unrounded) and the daily tally count the analysis too.
    assert tenant_month_spend(tenant_id=tenant.pk, now=at(2026, 10, 31)) == D("49.91")
    tally_recompute_day(tenant_id=tenant.pk, day=date(2026, 10, 3))
    with tenant_scope(tenant):
        tally = UsageTally.objects.get(model="gpt-5-mini")
    assert (tally.responses, tally.input_text_tokens, tally.cached_text_tokens) == (
        1, 4_000_000, 400_000
    )  # fmt: skip


def test_metered_audio_is_recorded_as_minutes(world, agents_a):
    tenant, faq = world.tenant_a, agents_a["faq"]
    record(tenant, faq, "m1", at(2026, 10, 3), model="gpt-realtime-whisper", audio_ms=60_000)
    with tenant_scope(tenant):
        assert UsageEvent.objects.get(upstream_response_id="m1").kind == "minutes"
