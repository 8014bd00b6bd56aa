"""Live spend caps of one realtime session: a ``SpendGuard`` for the bridge.

``spend_guard_for`` reads the database once, at connect (sync: call it through
``database_sync_to_async``). The guard then works in memory: ``allows_response`` before any
response may start (a client's ``response.create``, the platform's own follow-up, and a response
the upstream starts itself on server VAD), ``on_usage`` on each ``response.done``, both instant.
Each response's cost is computed with the price book rates in force at connect and the plan's
markup, and taken off every cap that applies: the tenant's monthly budget, and the agent's and
the widget key's daily caps. A response is counted once, by its key (the upstream response id,
the ledger's idempotency key): a repeated ``response.done`` costs nothing more. Once one cap
reaches zero, the bridge lets the response in flight finish (it is billed), tells the client
``budget_exhausted`` and ends the session; a session whose caps are spent at connect ends before
its upstream opens.

Other sessions of the same tenant spend concurrently, each against the figures read at its
connect: the overshoot across concurrent sessions is bounded by what each had left at its
connect. New sessions are refused by ``admission_check`` (``spend_caps_exhausted``) once the
month's spend reaches the budget or the day's spend reaches the agent's or the widget key's cap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.utils import timezone

from billing import pricing
from billing.models import SpendCap
from billing.selectors import (
    plan_terms,
    price_book_load,
    tenant_day_spend,
    tenant_month_spend,
)
from billing.services import token_counts_from_response
from billing.usage import UsageRecord
from tenants.models import Tenant
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)


@dataclass
class Allowance:
    """What is left of one cap, in billed USD."""

    label: str
    remaining: Decimal


class SessionSpendGuard:
    def __init__(
        self,
        *,
        allowances: list[Allowance],
        rates: pricing.Rates,
        markup_percent: Decimal = Decimal(0),
    ) -> None:
        self.allowances = allowances
        self.rates = rates
        self.markup_percent = markup_percent
        self.spent = Decimal(0)
        self._counted: set[str] = set()  # keys of the responses already taken off

    def allows_response(self) -> bool:
        return all(allowance.remaining > 0 for allowance in self.allowances)

    def on_usage(self, record: UsageRecord) -> bool:
        """Take a response's billed cost off every cap, once per key; False once one is spent."""
        if record.key in self._counted:  # a repeated response.done: the ledger keeps one row
            return self.allows_response()
        self._counted.add(record.key)
        counts = token_counts_from_response(record.usage, audio_ms=record.audio_ms)
        billed = pricing.with_markup(pricing.cost(counts, self.rates), self.markup_percent)
        self.spent += billed
        for allowance in self.allowances:
            allowance.remaining -= billed
        return self.allows_response()

    @property
    def exhausted(self) -> list[str]:
        return [allowance.label for allowance in self.allowances if allowance.remaining <= 0]


def spend_allowances(
    *, tenant_id: int, agent_id: int | None, widget_key_id: int | None = None
) -> list[Allowance]:
    """What is left of every cap a new session of the agent (through the widget key) spends
    against: the tenant's monthly budget, the agent's and the widget key's daily caps (sync,
    reads the DB). Without an agent, the monthly budget alone."""
    tenant = Tenant.objects.get(pk=tenant_id)
    caps: list[SpendCap] = []
    with tenant_scope(tenant_id):
        if agent_id is not None:
            caps += list(SpendCap.objects.filter(agent_id=agent_id))
        if widget_key_id is not None:
            caps += list(SpendCap.objects.filter(widget_key_id=widget_key_id))
    allowances = []
    budget = tenant.effective_monthly_budget_usd  # the tenant's, within the platform's ceiling
    if budget is not None:
        spent = tenant_month_spend(tenant_id=tenant_id)
        allowances.append(Allowance("monthly budget", budget - spent))
    for cap in caps:
        if cap.agent_id is not None:
            spent = tenant_day_spend(tenant_id=tenant_id, agent_id=cap.agent_id)
            label = "agent daily cap"
        else:
            spent = tenant_day_spend(tenant_id=tenant_id, widget_key_id=cap.widget_key_id)
            label = "widget key daily cap"
        allowances.append(Allowance(label, cap.daily_limit_usd - spent))
    return allowances


def spend_caps_exhausted(
    *, tenant_id: int, agent_id: int | None, widget_key_id: int | None = None
) -> list[str]:
    """The labels of the caps already spent for a new session (admission: refuse if any)."""
    allowances = spend_allowances(
        tenant_id=tenant_id, agent_id=agent_id, widget_key_id=widget_key_id
    )
    return [allowance.label for allowance in allowances if allowance.remaining <= 0]


def spend_guard_for(
    *,
    tenant_id: int,
    agent_id: int,
    model: str,
    provider: str,
    widget_key_id: int | None = None,
) -> SessionSpendGuard | None:
    """The guard of a new session of an agent running ``model`` at ``provider``, or None when
    no cap applies to it (sync, reads the DB)."""
    allowances = spend_allowances(
        tenant_id=tenant_id, agent_id=agent_id, widget_key_id=widget_key_id
    )
    if not allowances:
        return None
    book = price_book_load()
    today = timezone.now().date()
    try:
        rates = book.rates_for(model=model, provider=provider, day=today)
    except pricing.MissingPrice:
        # An unpriced model under a cap: refuse to spend rather than spend blind.
        logger.error("no price for %s: a capped session cannot spend", model)
        allowances.append(Allowance("unpriced model", Decimal(0)))
        rates = pricing.LOCAL_ENGINE
    terms = plan_terms(tenant_id=tenant_id)
    return SessionSpendGuard(
        allowances=allowances, rates=rates, markup_percent=terms.markup_percent
    )
