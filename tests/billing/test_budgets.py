"""Budgets the tenant controls: the budget within the platform's ceiling, its alerts at 50, 80
and 100 % (locmem mail and a real webhook receiver), and the spend shown next to each cap."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from agents import webhooks
from agents.models import WebhookDelivery, WebhookEndpoint
from billing import budgets
from billing.models import BudgetAlert, SpendCap
from billing.selectors import cap_spend
from billing.services import billing_profile_update, spend_cap_set, tally_sweep
from billing.spend import spend_caps_exhausted
from tenants import services as tenant_services
from tenants.models import AuditEvent, Role, Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from tests.agents.test_tenant_webhooks import Receiver, readme_verifier
from tests.billing.conftest import at, record
from tests.billing.test_console import user_with_role
from tests.conftest import require_service

BUDGET = "billing-budget"
# gpt-realtime-2 audio output: $64 per 1M tokens, so 10,000 tokens bill $0.64 (no plan).
PER_10K_AUDIO_OUT = Decimal("0.64")


def set_tenant(tenant, **fields):
    Tenant.objects.filter(pk=tenant.pk).update(**fields)
    tenant.refresh_from_db()


def budget_of(tenant):
    return Tenant.objects.get(pk=tenant.pk).monthly_budget_usd


# --- the budget and its ceiling ---------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "finance"])
def test_owners_and_finance_set_the_budget_within_the_ceiling_audited(client, world, role):
    set_tenant(world.tenant_a, monthly_budget_ceiling_usd=Decimal("1000.00"))
    user = user_with_role(world, role)
    client.force_login(user)
    answer = client.post(reverse(BUDGET, args=["tenant-a"]), {"monthly_budget_usd": "250.5"})
    assert answer.status_code == 302
    assert budget_of(world.tenant_a) == Decimal("250.50")
    with tenant_scope(world.tenant_a):
        event = AuditEvent.objects.get(action="tenant.monthly_budget_changed")
    assert event.actor == user
    assert event.changes == {"monthly_budget_usd": [None, "250.50"], "ceiling_usd": "1000.00"}
    page = client.get(reverse("billing-usage", args=["tenant-a"])).content.decode()
    assert "$250.50" in page and "The platform's ceiling for this account is $1000.00" in page
    # Cleared: the ceiling is the cap in force.
    client.post(reverse(BUDGET, args=["tenant-a"]), {"monthly_budget_usd": ""})
    assert budget_of(world.tenant_a) is None
    assert Tenant.objects.get(pk=world.tenant_a.pk).effective_monthly_budget_usd == Decimal(1000)


def test_a_budget_above_the_ceiling_is_refused_with_a_form_error(client, world):
    set_tenant(world.tenant_a, monthly_budget_usd=Decimal("100"),
               monthly_budget_ceiling_usd=Decimal("500"))  # fmt: skip
    client.force_login(world.owner_a)
    answer = client.post(reverse(BUDGET, args=["tenant-a"]), {"monthly_budget_usd": "500.01"})
    assert answer.status_code == 400
    body = answer.content.decode()
    assert 'id="budget-error"' in body
    assert "The monthly budget can be at most $500.00, the ceiling the platform set" in body
    for bad in ("-1", "lots", "1e12"):
        answer = client.post(reverse(BUDGET, args=["tenant-a"]), {"monthly_budget_usd": bad})
        assert answer.status_code == 400 and 'id="budget-error"' in answer.content.decode()
    assert budget_of(world.tenant_a) == Decimal("100.00")  # nothing changed
    with tenant_scope(world.tenant_a):
        assert not AuditEvent.objects.filter(action="tenant.monthly_budget_changed").exists()
    assert (
        client.post(reverse(BUDGET, args=["tenant-a"]), {"monthly_budget_usd": "500"}).status_code
        == 302
    )  # noqa: E501
    assert budget_of(world.tenant_a) == Decimal("500.00")


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_other_roles_cannot_set_the_budget(client, world, role):
    client.force_login(user_with_role(world, role))
    answer = client.post(reverse(BUDGET, args=["tenant-a"]), {"monthly_budget_usd": "5"})
    assert answer.status_code == 403
    assert budget_of(world.tenant_a) is None


def test_the_owner_of_b_cannot_set_the_budget_of_a(client, world):
    client.force_login(world.owner_b)
    answer = client.post(reverse(BUDGET, args=["tenant-a"]), {"monthly_budget_usd": "5"})
    assert answer.status_code == 404
    assert budget_of(world.tenant_a) is None


def test_the_ceiling_caps_sessions_without_a_budget_and_a_budget_above_it(world, agents_a):
    support = agents_a["support"]
    now = timezone.now()
    record(world.tenant_a, support, "r1", now, audio_out=100_000)  # $6.40
    assert spend_caps_exhausted(tenant_id=world.tenant_a.pk, agent_id=support.pk) == []
    set_tenant(world.tenant_a, monthly_budget_ceiling_usd=Decimal("6.00"))
    assert spend_caps_exhausted(tenant_id=world.tenant_a.pk, agent_id=support.pk) == [
        "monthly budget"
    ]
    set_tenant(world.tenant_a, monthly_budget_usd=Decimal("50"))  # set by staff, above it
    assert spend_caps_exhausted(tenant_id=world.tenant_a.pk, agent_id=support.pk) == [
        "monthly budget"
    ]
    set_tenant(world.tenant_a, monthly_budget_ceiling_usd=None)
    assert spend_caps_exhausted(tenant_id=world.tenant_a.pk, agent_id=support.pk) == []


# --- alerts -----------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def alerting(world, agents_a, receiver, settings):
    """Tenant A with a $10 budget, a finance member, and two webhook endpoints: one subscribed
    to budget.threshold, one to session.ended only."""
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = True  # the receiver listens on 127.0.0.1
    set_tenant(world.tenant_a, monthly_budget_usd=Decimal("10.00"))
    finance = tenant_services.user_get_or_create(email="finance-a@example.com", password="x")
    tenant_services.membership_set(tenant=world.tenant_a, user=finance, role=Role.FINANCE)
    for path, events in (("/budget", ["budget.threshold"]), ("/sessions", ["session.ended"])):
        webhooks.webhook_endpoint_create(
            tenant=world.tenant_a, actor=None,
            fields={"url": receiver.url + path, "events": events},
        )  # fmt: skip
    return agents_a["support"]


def spend(world, agent, key, when, tokens):
    """Usage billing ``tokens`` audio output tokens of gpt-realtime-2 ($0.64 per 10,000)."""
    record(world.tenant_a, agent, key, when, audio_out=tokens)


def check(world, now):
    created = budgets.budget_alerts_check(tenant_id=world.tenant_a.pk, now=now)
    return [alert.threshold_percent for alert in created]


def delivered(receiver):
    webhooks.deliveries_sweep(inline=True)
    return [
        (body["budget"]["month"], body["budget"]["threshold_percent"])
        for body in receiver.bodies("/budget")
    ]


def test_each_threshold_fires_once_per_month_and_again_next_month(world, alerting, receiver):
    agent = alerting
    october = at(2026, 10, 20)
    billing_profile_update(tenant_id=world.tenant_a.pk, actor=None,
                           fields={"billing_email": "ap@tenant-a.example"})  # fmt: skip
    spend(world, agent, "r1", at(2026, 10, 2), 50_000)  # $3.20: 32 %
    assert check(world, october) == []
    assert mail.outbox == []
    spend(world, agent, "r2", at(2026, 10, 5), 40_000)  # $5.76: 57.6 %
    assert check(world, october) == [50]
    assert check(world, october) == []  # checked again: nothing new
    [message] = mail.outbox
    # Owners, finance and the billing profile's address; no viewer.
    assert sorted(message.to) == [
        "ap@tenant-a.example", "finance-a@example.com", "owner-a@example.com"
    ]  # fmt: skip
    assert message.subject == "Tenant A: 50% of the monthly budget used (October 2026)"
    assert "Billed so far this month: $5.76" in message.body
    assert "Monthly budget: $10.00" in message.body
    assert delivered(receiver) == [("2026-10", 50)]

    spend(world, agent, "r3", at(2026, 10, 9), 50_000)  # $8.96: 89.6 %
    spend(world, agent, "r4", at(2026, 10, 9, 13), 20_000)  # $10.24: 102.4 %
    assert check(world, october) == [80, 100]
    assert check(world, october) == []
    assert [m.subject.split(":")[1].split("%")[0].strip() for m in mail.outbox] == [
        "50", "80", "100",
    ]  # fmt: skip
    assert "has used all of its monthly budget for October 2026" in mail.outbox[2].body
    assert delivered(receiver) == [("2026-10", 50), ("2026-10", 80), ("2026-10", 100)]
    assert receiver.bodies("/sessions") == []  # not subscribed to budget.threshold

    # November starts afresh: 50 % once more, once.
    november = at(2026, 11, 3)
    spend(world, agent, "r5", at(2026, 11, 2), 80_000)  # $5.12 this month
    assert check(world, november) == [50]
    assert check(world, november) == []
    assert len(mail.outbox) == 4
    assert mail.outbox[3].subject == "Tenant A: 50% of the monthly budget used (November 2026)"
    assert delivered(receiver)[-1] == ("2026-11", 50)
    assert len(receiver.bodies("/budget")) == 4
    with tenant_scope(world.tenant_a):
        rows = list(
            BudgetAlert.objects.order_by("month", "threshold_percent").values_list(
                "month", "threshold_percent", "spend_usd", "budget_usd"
            )
        )
    assert rows == [
        (date(2026, 10, 1), 50, Decimal("5.76"), Decimal("10.00")),
        (date(2026, 10, 1), 80, Decimal("10.24"), Decimal("10.00")),  # both seen at once
        (date(2026, 10, 1), 100, Decimal("10.24"), Decimal("10.00")),
        (date(2026, 11, 1), 50, Decimal("5.12"), Decimal("10.00")),
    ]


def test_the_webhook_is_signed_and_says_what_was_crossed(world, alerting, receiver):
    spend(world, alerting, "r1", at(2026, 10, 2), 130_000)  # $8.32: 83.2 %
    assert check(world, at(2026, 10, 20)) == [50, 80]
    webhooks.deliveries_sweep(inline=True)
    secret = Tenant.objects.get(pk=world.tenant_a.pk).webhook_signing_secret
    verify = readme_verifier()
    events = [verify(secret, headers, body) for path, headers, body in receiver.requests]
    assert [event["type"] for event in events] == ["budget.threshold", "budget.threshold"]
    assert {request[1]["X-VP-Event"] for request in receiver.requests} == {"budget.threshold"}
    assert events[1]["budget"] == {
        "month": "2026-10", "threshold_percent": 80, "budget_usd": "10.00",
        "spend_usd": "8.32", "amount_basis": "billed",
        "crossed_at": events[1]["budget"]["crossed_at"],
    }  # fmt: skip
    assert events[1]["tenant"]["slug"] == "tenant-a" and events[1]["session"] is None
    assert events[0]["id"] != events[1]["id"]
    # Queued again (a check after a receiver failed): the same deliveries, nothing more.
    with tenant_scope(world.tenant_a):
        for alert in BudgetAlert.objects.all():
            webhooks.budget_deliveries_create(tenant_id=world.tenant_a.pk, alert_id=alert.pk)
        assert WebhookDelivery.objects.filter(event_type="budget.threshold").count() == 2


def test_an_endpoint_subscribes_to_budget_thresholds_in_the_console(client, world):
    client.force_login(world.owner_a)
    page = client.get(reverse("webhook-list", args=["tenant-a"])).content.decode()
    assert 'value="budget.threshold"' in page
    assert "budget.threshold" in WebhookEndpoint.Event.values


def test_a_failed_mail_is_sent_by_the_next_check(world, alerting, monkeypatch):
    spend(world, alerting, "r1", at(2026, 10, 2), 80_000)  # $5.12
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise OSError("mail server down")

    monkeypatch.setattr(budgets, "send_mail", broken)
    assert check(world, at(2026, 10, 20)) == [50]
    assert len(calls) == 1 and mail.outbox == []
    monkeypatch.undo()
    assert check(world, at(2026, 10, 20)) == []  # no new threshold, the mail goes out now
    assert len(mail.outbox) == 1
    assert check(world, at(2026, 10, 20)) == []
    assert len(mail.outbox) == 1


def test_alerts_are_checked_when_usage_is_tallied(world, alerting, receiver):
    now = timezone.now()
    spend(world, alerting, "r1", now, 160_000)  # $10.24 today
    tally_sweep()
    with tenant_scope(world.tenant_a):
        assert sorted(BudgetAlert.objects.values_list("threshold_percent", flat=True)) == [
            50, 80, 100,
        ]  # fmt: skip
    assert len(mail.outbox) == 3
    tally_sweep()  # nothing new to tally, nothing sent twice
    assert len(mail.outbox) == 3


def test_no_budget_no_alert(world, agents_a):
    record(world.tenant_a, agents_a["support"], "r1", at(2026, 10, 2), audio_out=1_000_000)
    assert budgets.budget_alerts_check(tenant_id=world.tenant_a.pk, now=at(2026, 10, 3)) == []
    assert mail.outbox == []


def test_another_tenants_spend_raises_no_alert_of_a(world, alerting):
    set_tenant(world.tenant_b, monthly_budget_usd=Decimal("1"))
    record(world.tenant_b, None, "rb", at(2026, 10, 2), audio_out=1_000_000)
    assert check(world, at(2026, 10, 3)) == []
    assert budgets.budget_alerts_check(tenant_id=world.tenant_b.pk, now=at(2026, 10, 3))
    assert [m.to for m in mail.outbox] == [["owner-b@example.com"]] * 3
    with scopes_disabled():
        assert set(BudgetAlert.objects.values_list("tenant_id", flat=True)) == {world.tenant_b.pk}


@pytest.mark.django_db(transaction=True)
def test_concurrent_checks_send_each_threshold_once_on_postgresql(world, agents_a):
    require_service("PostgreSQL", "127.0.0.1", 5432)
    if connection.vendor != "postgresql":
        pytest.skip("concurrency needs PostgreSQL (DATABASE_URL)")
    set_tenant(world.tenant_a, monthly_budget_usd=Decimal("10.00"))
    record(world.tenant_a, agents_a["support"], "r1", at(2026, 10, 2), audio_out=160_000)
    barrier = threading.Barrier(6)
    errors: list[Exception] = []
    created: list[int] = []

    def work():
        try:
            barrier.wait()
            created.extend(check(world, at(2026, 10, 20)))
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(created) == [50, 80, 100]
    assert sorted(int(m.subject.split(": ")[1].split("%")[0]) for m in mail.outbox) == [50, 80, 100]


# --- spend next to each cap -------------------------------------------------------------------


def test_cap_spend_today_and_this_month_by_agent_and_widget_key(world, agents_a):
    support, faq = agents_a["support"], agents_a["faq"]
    key = tenant_services.widget_key_create(
        tenant=world.tenant_a, name="Site", allowed_origins=["https://shop.example"]
    )
    record(world.tenant_a, support, "r1", at(2026, 10, 3), audio_out=10_000)  # $0.64
    record(world.tenant_a, support, "r2", at(2026, 10, 20, 9), audio_out=20_000, widget_key=key)
    record(world.tenant_a, faq, "r3", at(2026, 10, 20, 10), audio_out=1_000_000)  # $2.40 (mini)
    record(world.tenant_a, support, "r4", at(2026, 9, 30), audio_out=10_000)  # last month
    figures = cap_spend(tenant_id=world.tenant_a.pk, now=at(2026, 10, 20, 11))
    assert (figures.tenant.today, figures.tenant.month) == (Decimal("3.68"), Decimal("4.32"))
    assert (figures.by_agent[support.pk].today, figures.by_agent[support.pk].month) == (
        Decimal("1.28"), Decimal("1.92"),
    )  # fmt: skip
    assert figures.by_agent[faq.pk].today == Decimal("2.40")
    assert (figures.by_widget_key[key.pk].today, figures.by_widget_key[key.pk].month) == (
        Decimal("1.28"), Decimal("1.28"),
    )  # fmt: skip


def test_each_cap_shows_todays_and_this_months_billed_spend(client, world, agents_a):
    support = agents_a["support"]
    now = timezone.now()
    record(world.tenant_a, support, "r1", now - timedelta(seconds=5), audio_out=20_000)  # $1.28
    spend_cap_set(tenant_id=world.tenant_a.pk, agent_id=support.pk, daily_limit_usd=Decimal("1"))
    set_tenant(world.tenant_a, monthly_budget_usd=Decimal("20.00"))
    client.force_login(world.owner_a)
    page = client.get(reverse("billing-usage", args=["tenant-a"])).content.decode()
    caps = page[page.index('id="caps"') :]
    assert '<td class="cap-today">$1.28 <span class="badge">reached</span></td>' in caps
    assert '<td class="cap-month">$1.28</td>' in caps
    budget = page[page.index('id="monthly-budget"') :]
    assert "<td>$1.28</td><td>$1.28</td>" in budget  # today, this month
    with tenant_scope(world.tenant_a):
        assert SpendCap.objects.count() == 1
