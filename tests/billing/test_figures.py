"""One meaning per figure: tenants see billed amounts (provider cost is for staff), and input
token figures exclude cached tokens, the same on every page, export and the API."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
from django.urls import reverse

from agents.models import Session
from billing import pricing
from billing.models import TenantPlan, UsageEvent
from billing.selectors import events_total_cost
from billing.services import tally_session, tally_sweep
from tenants.scoping import tenant_scope
from tests.api.conftest import api_a  # noqa: F401 (a fixture)
from tests.billing.conftest import at, record
from tests.billing.test_console import user_with_role

MARKUP = Decimal("25")


@pytest.fixture
def priced(world, agents_a):
    """Tenant A on a +25 % plan, with one session's usage (cached text tokens included)."""
    support = agents_a["support"]
    with tenant_scope(world.tenant_a):
        TenantPlan.objects.create(tenant=world.tenant_a, name="Plus", markup_percent=MARKUP)
        session = Session.objects.create(
            tenant=world.tenant_a, agent=support, channel="api", model="gpt-realtime-2"
        )
    record(world.tenant_a, support, "r1", at(2026, 10, 3), session=session,
           text_in=10_000, cached_text=4_000, audio_in=20_000, audio_out=30_000)  # fmt: skip
    record(world.tenant_a, support, "r2", at(2026, 10, 3, 13), session=session,
           text_in=2_000, cached_text=1_000, text_out=500)  # fmt: skip
    tally_session(session_id=session.pk)
    with tenant_scope(world.tenant_a):
        provider = events_total_cost(UsageEvent.objects.filter(session=session))
    billed = pricing.with_markup(provider, MARKUP)
    return session, provider, billed


def test_the_session_page_shows_the_billed_amount(client, world, priced):
    session, provider, billed = priced
    # By hand: text 7,000 uncached × $4 + 5,000 cached × $0.40 + 500 out × $24, audio 20,000 in
    # × $32 + 30,000 out × $64, per 1M tokens; +25 %.
    assert provider == Decimal("0.028") + Decimal("0.002") + Decimal("0.012") + Decimal(
        "0.64"
    ) + Decimal("1.92")
    assert billed == Decimal("3.2525")
    client.force_login(user_with_role(world, "finance"))
    page = client.get(reverse("session-detail", args=["tenant-a", session.pk])).content.decode()
    shown = re.search(r'id="session-cost"><strong>\$([0-9.]+)</strong>', page).group(1)
    assert Decimal(shown) == billed
    assert "Billed so far" in page and "Cost so far" not in page
    assert "Provider cost" not in page  # staff only
    assert "Text input, uncached</dt><dd>7000 tokens" in page
    assert "Text input, cached</dt><dd>5000 tokens" in page


def test_staff_also_see_the_provider_cost_labelled(client, world, priced):
    session, provider, billed = priced
    world.owner_a.is_staff = True
    world.owner_a.save(update_fields=["is_staff"])
    client.force_login(world.owner_a)
    page = client.get(reverse("session-detail", args=["tenant-a", session.pk])).content.decode()
    assert f'id="session-provider-cost">${provider:.6f}' in page
    assert "Provider cost (staff only)" in page
    usage = client.get(
        reverse("billing-usage", args=["tenant-a"]), {"start": "2026-10-01", "end": "2026-10-31"}
    ).content.decode()
    assert "provider cost, Oct 1, 2026–Oct 31, 2026 (staff only)" in usage


def test_the_session_list_shows_and_filters_billed_amounts(client, world, priced):
    session, provider, billed = priced
    client.force_login(world.owner_a)
    url = reverse("session-list", args=["tenant-a"])
    page = client.get(url).content.decode()
    assert f'<td class="cost">${billed:.4f}</td>' in page and "<th>Billed</th>" in page
    assert "provider-cost" not in page
    # $3.2525 billed is $2.602 of provider cost: the filter is on the billed amount.
    assert f">{session.pk}</a>" in client.get(url, {"cost_min": "3.25"}).content.decode()
    assert f">{session.pk}</a>" not in client.get(url, {"cost_min": "3.26"}).content.decode()
    assert f">{session.pk}</a>" not in client.get(url, {"cost_max": "3.25"}).content.decode()


def test_the_usage_page_counts_cached_tokens_the_same_in_the_chart_and_the_table(
    client, world, priced
):
    client.force_login(world.owner_a)
    page = client.get(
        reverse("billing-usage", args=["tenant-a"]), {"start": "2026-01-01", "end": "2026-12-31"}
    ).content.decode()
    assert "billed, Jan 1, 2026–Dec 31, 2026 (25% plan markup)" in page  # the year is named
    assert "Billed amount per day, by model" in page
    assert "Input figures exclude cached tokens" in page
    # The chart's bars: uncached text input 7,000, cached 5,000 ...
    assert "<title>Text input, uncached: 7,000 tokens</title>" in page
    assert "<title>Text input, cached: 5,000 tokens</title>" in page
    # ... and the daily table's row for the same day says the same.
    assert "<th>Input, uncached (text / audio / image)</th>" in page
    assert "<td>7000 / 20000 / 0</td>" in page and "<td>5000 / 0 / 0</td>" in page
    assert "$3.2525" in page and "provider cost" not in page.lower()


def test_the_raw_export_names_what_its_counts_and_amounts_are(client, world, priced):
    client.force_login(world.owner_a)
    url = reverse("billing-usage-export", args=["tenant-a"]) + "?start=2026-10-01&end=2026-10-31"
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(url).streaming_content).decode())))
    assert rows[0]["input_text_tokens_incl_cached"] == "10000"
    assert rows[0]["cached_text_tokens"] == "4000"
    assert "provider_cost_usd" not in rows[0]
    r1 = pricing.with_markup(
        Decimal("0.024") + Decimal("0.0016") + Decimal("0.64") + Decimal("1.92"), MARKUP
    )
    assert Decimal(rows[0]["billed_usd"]) == r1


def test_the_usage_api_says_its_amounts_are_billed_and_input_excludes_cached(
    api_a,  # noqa: F811
    world,
    priced,
):
    session, provider, billed = priced
    answer = api_a.get("/api/v1/usage", query={"start": "2026-10-01", "end": "2026-10-31",
                                                "group_by": "model"})  # fmt: skip
    assert answer.status == 200, answer.body
    body = answer.body
    assert (body["amount_basis"], body["cached_tokens_in_input"]) == ("billed", False)
    assert "cost_usd" not in body
    [row] = body["data"]
    assert Decimal(row["billed_usd"]) == billed
    assert (row["quantities"]["text_in"], row["quantities"]["text_cached"]) == ("7000", "5000")
    assert "cost_usd" not in row


def test_the_session_ended_webhook_cost_is_the_billed_amount(world, priced):
    from agents import webhook_payloads
    from tenants.models import Tenant

    session, provider, billed = priced
    with tenant_scope(world.tenant_a):
        payload = webhook_payloads.session_event_payload(
            tenant=Tenant.objects.get(pk=world.tenant_a.pk), event_type="session.ended",
            event_id="evt_x", session=session,
        )  # fmt: skip
    assert (payload["cost"]["currency"], payload["cost"]["basis"]) == ("USD", "billed")
    assert Decimal(payload["cost"]["amount"]) == billed


def test_analytics_shows_billed_amounts_per_agent(client, world, priced):
    tally_sweep()
    client.force_login(world.owner_a)
    page = client.get(
        reverse("session-analytics", args=["tenant-a"]),
        {"start": "2026-10-01", "end": "2026-10-31"},
    ).content.decode()
    assert "Billed amount per agent" in page and "Provider cost" not in page
    assert "<td>Support</td><td>$3.2525</td>" in page
