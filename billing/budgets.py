"""The tenant's monthly budget: set by owners and finance members up to the platform's ceiling,
and its alerts at 50, 80 and 100 % (e-mail to the owners and finance members, and the tenant's
webhook endpoints subscribed to ``budget.threshold``).

Every figure here is the billed amount (provider cost under the plan's markup), the one the
budget is enforced against (``billing.spend``) and the tenant is invoiced.

Alerts are checked when usage is tallied (``billing.services.tally_session`` and the minute
sweep), never on the audio path: the alert may lag the spend by up to a minute. Each threshold
fires once per tenant and month: the row (tenant, month, threshold) is inserted under a unique
constraint, so two checks running at once cannot both send. A budget changed mid-month keeps
the thresholds already crossed that month; the next month starts afresh.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from billing import pricing
from billing.models import BudgetAlert, TenantBillingProfile
from billing.selectors import month_start, tenant_month_spend
from billing.signals import budget_threshold_reached
from tenants.audit import audit_record
from tenants.models import FINANCE_ROLES, Membership, Tenant
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

MAX_BUDGET = Decimal("1e10")  # the column holds 12 digits, 2 of them cents


# --- the budget -----------------------------------------------------------------------------


def budget_amount_problem(*, amount: Decimal | None, ceiling: Decimal | None) -> str:
    """Why ``amount`` may not be a tenant's monthly budget ("" when it may)."""
    if amount is None:
        return ""
    if not amount.is_finite() or amount < 0 or amount >= MAX_BUDGET:
        return "The monthly budget must be an amount in USD, like 500.00."
    if ceiling is not None and amount > ceiling:
        return (
            f"The monthly budget can be at most ${ceiling:,.2f}, the ceiling the platform set "
            "for this account. Ask us if you need more."
        )
    return ""


@transaction.atomic
def tenant_budget_set(
    *, tenant: Tenant, actor: AbstractBaseUser | None, amount: Decimal | None
) -> bool:
    """Set (None: clear) the tenant's monthly budget, within the platform's ceiling; audited.

    Raises ``ValidationError`` (on ``monthly_budget_usd``) above the ceiling or for an amount
    that is not one. False when nothing changed. The row is locked so that a ceiling lowered by
    staff at the same moment is seen.
    """
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    amount = None if amount is None else pricing.cents(amount) if amount.is_finite() else amount
    problem = budget_amount_problem(amount=amount, ceiling=locked.monthly_budget_ceiling_usd)
    if problem:
        raise ValidationError({"monthly_budget_usd": problem})
    before = locked.monthly_budget_usd
    if before == amount:
        return False
    Tenant.objects.filter(pk=tenant.pk).update(monthly_budget_usd=amount)
    tenant.monthly_budget_usd = amount
    audit_record(
        tenant=tenant, actor=actor, action="tenant.monthly_budget_changed", target=tenant,
        changes={
            "monthly_budget_usd": [_text(before), _text(amount)],
            "ceiling_usd": _text(locked.monthly_budget_ceiling_usd),
        },
    )  # fmt: skip
    return True


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else f"{amount:.2f}"


# --- alerts ---------------------------------------------------------------------------------


def thresholds_crossed(*, spend: Decimal, budget: Decimal) -> list[int]:
    """The alert thresholds (percent) a month's billed spend has reached. Nothing is crossed
    before anything is spent (a $0 budget alerts at the first cent)."""
    if spend <= 0:
        return []
    return [threshold for threshold in BudgetAlert.THRESHOLDS if spend * 100 >= budget * threshold]


def budget_alerts_check(*, tenant_id: int, now: datetime | None = None) -> list[BudgetAlert]:
    """Record every threshold of this month's budget the tenant's spend has newly crossed, and
    send what is due (also what an earlier check failed to send). Returns the new alerts.

    Safe to run concurrently and again: a threshold already recorded this month is skipped by
    the unique constraint, and sending is claimed per alert.
    """
    now = now or timezone.now()
    tenant = Tenant.objects.get(pk=tenant_id)
    budget = tenant.effective_monthly_budget_usd
    created: list[BudgetAlert] = []
    if budget is not None:
        spend = tenant_month_spend(tenant_id=tenant_id, now=now)
        month = month_start(now).date()
        with tenant_scope(tenant_id):
            for threshold in thresholds_crossed(spend=spend, budget=budget):
                try:
                    with transaction.atomic():
                        alert = BudgetAlert.objects.create(
                            tenant_id=tenant_id,
                            month=month,
                            threshold_percent=threshold,
                            budget_usd=budget,
                            spend_usd=pricing.cents(spend),
                        )
                except IntegrityError:  # recorded before, or by a concurrent check just now
                    continue
                logger.info("tenant %s crossed %s%% of its budget for %s", tenant_id, threshold,
                            f"{month:%Y-%m}")  # fmt: skip
                created.append(alert)
    budget_alerts_send(tenant_id=tenant_id, now=now)
    return created


def budget_alert_recipients(*, tenant_id: int) -> list[str]:
    """The e-mail addresses of the tenant's owners and finance members (active users), and
    the billing e-mail of its billing profile."""
    with tenant_scope(tenant_id):
        emails = set(
            Membership.objects.filter(role__in=FINANCE_ROLES, user__is_active=True).values_list(
                "user__email", flat=True
            )
        )
        emails.update(TenantBillingProfile.objects.values_list("billing_email", flat=True))
        return sorted(email for email in emails if email)


def budget_alerts_send(*, tenant_id: int, now: datetime | None = None) -> int:
    """Send the e-mails and queue the webhooks of the tenant's alerts that have not had them.
    Returns how many e-mails went out."""
    now = now or timezone.now()
    sent = 0
    with tenant_scope(tenant_id):
        for alert in BudgetAlert.objects.filter(webhooks_queued_at__isnull=True).order_by("pk"):
            _webhooks_queue(alert, now=now)
        pending = list(BudgetAlert.objects.filter(emailed_at__isnull=True).order_by("pk"))
        for alert in pending:
            sent += _email_send(alert, now=now)
    return sent


def _webhooks_queue(alert: BudgetAlert, *, now: datetime) -> None:
    outcomes = budget_threshold_reached.send_robust(
        sender=BudgetAlert, tenant_id=alert.tenant_id, alert_id=alert.pk
    )
    failures = [outcome for _, outcome in outcomes if isinstance(outcome, Exception)]
    for failure in failures:
        logger.error(
            "budget alert %s: a receiver failed: %r", alert.pk, failure,
            exc_info=(type(failure), failure, failure.__traceback__),
        )  # fmt: skip
    if not failures:  # else the next check sends the signal again (its receivers dedupe)
        BudgetAlert.objects.filter(pk=alert.pk).update(webhooks_queued_at=now)


def _email_send(alert: BudgetAlert, *, now: datetime) -> int:
    claimed = BudgetAlert.objects.filter(pk=alert.pk, emailed_at__isnull=True).update(
        emailed_at=now
    )
    if not claimed:  # another check sends it
        return 0
    tenant = Tenant.objects.get(pk=alert.tenant_id)
    recipients = budget_alert_recipients(tenant_id=tenant.pk)
    if recipients:
        subject, body = budget_alert_message(tenant=tenant, alert=alert)
        try:
            send_mail(subject, body, None, recipients)
        except Exception:
            logger.exception("budget alert %s: the e-mail could not be sent", alert.pk)
            BudgetAlert.objects.filter(pk=alert.pk).update(emailed_at=None)
            return 0
    BudgetAlert.objects.filter(pk=alert.pk).update(email_recipients=recipients)
    return 1 if recipients else 0


def budget_alert_message(*, tenant: Tenant, alert: BudgetAlert) -> tuple[str, str]:
    """The alert e-mail's subject and body (plain text)."""
    used = "all" if alert.threshold_percent >= 100 else f"{alert.threshold_percent}%"
    subject = (
        f"{tenant.name}: {alert.threshold_percent}% of the monthly budget used "
        f"({alert.month:%B %Y})"
    )
    url = settings.VP_PUBLIC_URL + reverse("billing-usage", args=[tenant.slug])
    consequence = (
        "New sessions are refused and running ones end until the month is over or the budget "
        "is raised."
        if alert.threshold_percent >= 100
        else "Sessions stop once the budget is used up."
    )
    body = (
        f"{tenant.name} has used {used} of its monthly budget for {alert.month:%B %Y}.\n\n"
        f"Billed so far this month: ${alert.spend_usd:,.2f}\n"
        f"Monthly budget: ${alert.budget_usd:,.2f}\n\n"
        f"{consequence}\n\n"
        f"Amounts are what you are billed (usage priced by the price book under your plan), "
        f"month to date in UTC.\n"
        f"Usage, caps and the budget: {url}\n"
    )
    return subject, body
