"""Webhooks to the tenant's systems: endpoints, deliveries, attempts.

A session's lifecycle signals (``agents.signals``) become one :class:`WebhookDelivery` per
subscribed endpoint, keyed by (endpoint, event): a repeated signal (``session_ended`` after
the sweep's "abandoned" guess) finds the delivery already there and adds nothing. Each delivery
is then attempted until the endpoint answers 2xx, or its 24 hours are up:

* signed exactly as tool webhooks are (``agents.realtime.tools.signatures``: the current secret
  and, during a rotation's overlap, the previous one), with ``X-VP-Event`` and
  ``X-VP-Delivery`` besides ``X-VP-Timestamp``, ``X-VP-Signature`` and ``X-VP-Nonce``;
* sent through :class:`agents.realtime.outbound.OutboundClient` (the tool webhooks' SSRF rules:
  every address checked, the checked one dialled, no redirect), the URL checked when saved too;
* retried after 10 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, then every 8 h, each ±20 %
  (jitter), the last one at the latest 24 h after the first attempt (:func:`retry_at`).
  4xx, 5xx, timeouts and network errors are retried; a URL that is not allowed (now resolving
  to a private address) fails at once; **410 Gone** turns the endpoint off (the receiver said it
  is gone for good), which is audited and shown in the console.

The due time is in the row, so nothing depends on a broker message arriving: the first attempt
is queued when the delivery is made (and short retries with a countdown), and the beat sweep
(:func:`deliveries_sweep`, every 30 s) queues whatever is due and not in flight. An attempt
claims its delivery with one conditional UPDATE (a token and a lease), so two workers (a
redelivered message, the sweep and a countdown) never post the same attempt; a worker killed
mid-attempt leaves a lease that runs out, and the sweep sends the delivery again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents import webhook_payloads
from agents.models import Agent, Session, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from agents.realtime import outbound
from agents.realtime.tools import signatures
from billing.models import BudgetAlert
from billing.signals import budget_threshold_reached
from tenants.audit import audit_record
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

logger = logging.getLogger(__name__)

# Seconds before the 2nd, 3rd, ... attempt; the last value repeats.
RETRY_SCHEDULE_S = (10, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
RETRY_WINDOW = timedelta(hours=24)
JITTER = 0.2
# How long an attempt holds its delivery: longer than the task's hard time limit, so a live
# attempt is never taken over; a dead one's delivery is free again after it.
CLAIM_SECONDS = 120
# Retries due within this are queued with a countdown (well under the broker's visibility
# timeout); later ones are left to the sweep.
COUNTDOWN_LIMIT_S = 300
EXCERPT_CHARS = 500
MAX_RESPONSE_BYTES = 256 * 1024
USER_AGENT = "VoicePlatform-Webhooks/1"
# Error kinds a later attempt cannot change: the delivery fails at once.
FINAL_ERRORS = frozenset(
    {"invalid_url", "forbidden_address", "gone", "endpoint_disabled", "session_gone"}
)

EVENT_CHOICES = WebhookEndpoint.Event.choices


# --- schedule ----------------------------------------------------------------------------------


def retry_at(
    *,
    first_attempt_at: datetime,
    attempts: int,
    now: datetime,
    uniform: Callable[[float, float], float] = random.uniform,
) -> datetime | None:
    """When to try again after ``attempts`` failed attempts (None: give up).

    The schedule's delay, jittered by ±``JITTER``; never later than 24 h after the first
    attempt (a delay reaching past that is cut to it: one last attempt at the window's end).
    """
    deadline = first_attempt_at + RETRY_WINDOW
    if now >= deadline:
        return None
    base = RETRY_SCHEDULE_S[min(max(attempts, 1), len(RETRY_SCHEDULE_S)) - 1]
    due = now + timedelta(seconds=base * uniform(1 - JITTER, 1 + JITTER))
    return min(due, deadline)


# --- endpoints ---------------------------------------------------------------------------------


def webhook_url_problem(url: str) -> str:
    """Why a webhook URL may not be saved ("" when it may): the outbound rules, checked now
    (https, a public host whose every address is allowed). With VP_ALLOW_PRIVATE_WEBHOOKS
    (embedded mode) http and private addresses are accepted for local testing. Every delivery
    checks again, since a name can later point elsewhere."""
    allow_private = settings.VP_ALLOW_PRIVATE_WEBHOOKS
    error = outbound.urls_check_blocking(
        [url], allow_private=allow_private, require_https=not allow_private
    )[0]
    if error is None:
        return ""
    if error.kind == "invalid_url":
        if "must start with" in error.message:
            return "A webhook endpoint needs an https:// URL."
        return f"This URL is not valid: {error.message}."
    if error.kind == "forbidden_address":
        return (
            f"This URL points at a private, local or reserved address ({error.message}). "
            "A webhook endpoint must be reachable on the public internet."
        )
    return f"This URL's host could not be resolved ({error.message}). Check the address."


def _endpoint_fields_clean(*, tenant: Tenant, fields: dict[str, Any]) -> dict[str, Any]:
    url = str(fields.get("url") or "").strip()
    problem = webhook_url_problem(url) if url else "Enter the endpoint's URL."
    errors: dict[str, str] = {}
    if problem:
        errors["url"] = problem
    events = [str(event) for event in fields.get("events") or []]
    unknown = sorted(set(events) - set(WebhookEndpoint.Event.values))
    if not events:
        errors["events"] = "Choose at least one event."
    elif unknown:
        errors["events"] = f"Unknown event: {', '.join(unknown)}."
    agent = fields.get("agent")
    if agent is not None and (not isinstance(agent, Agent) or agent.tenant_id != tenant.pk):
        errors["agent"] = "Choose one of your agents."
    if errors:
        raise ValidationError(errors)
    return {
        "url": url,
        "agent": agent,
        "events": [event for event in WebhookEndpoint.Event.values if event in events],
        "enabled": bool(fields.get("enabled", True)),
        "description": str(fields.get("description") or "").strip()[:200],
    }


def _audit_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "agent": endpoint.agent_id,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "description": endpoint.description,
    }


@transaction.atomic
def webhook_endpoint_create(
    *, tenant: Tenant, actor: AbstractBaseUser | None, fields: dict[str, Any]
) -> WebhookEndpoint:
    """Add an endpoint (the URL checked now); raises ``ValidationError`` by field."""
    clean = _endpoint_fields_clean(tenant=tenant, fields=fields)
    with tenant_scope(tenant):
        endpoint = WebhookEndpoint.objects.create(tenant=tenant, **clean)
    audit_record(
        tenant=tenant, actor=actor, action="webhook_endpoint.created", target=endpoint,
        changes=_audit_view(endpoint),
    )  # fmt: skip
    return endpoint


@transaction.atomic
def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, actor: AbstractBaseUser | None, fields: dict[str, Any]
) -> bool:
    """Change an endpoint; False when nothing changed. Turning it on again clears the
    platform's reason for having turned it off."""
    tenant = Tenant.objects.get(pk=endpoint.tenant_id)
    clean = _endpoint_fields_clean(tenant=tenant, fields=fields)
    before = _audit_view(endpoint)
    for name, value in clean.items():
        setattr(endpoint, name, value)
    after = _audit_view(endpoint)
    if after == before:
        return False
    if endpoint.enabled:
        endpoint.disabled_reason = ""
    with tenant_scope(tenant):
        endpoint.save()
    changed = {name: after[name] for name in after if after[name] != before[name]}
    audit_record(
        tenant=tenant, actor=actor, action="webhook_endpoint.updated", target=endpoint,
        changes=changed,
    )  # fmt: skip
    return True


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: AbstractBaseUser | None) -> None:
    """Remove an endpoint with its delivery log."""
    audit_record(
        tenant=endpoint.tenant_id, actor=actor, action="webhook_endpoint.deleted",
        target=endpoint, changes=_audit_view(endpoint),
    )  # fmt: skip
    with tenant_scope(endpoint.tenant_id):
        endpoint.delete()


# --- deliveries --------------------------------------------------------------------------------


def _enqueue_on_commit(deliveries: list[tuple[int, int]], countdown: float = 0) -> None:
    """Queue attempts once the transaction commits. Never raises: a lost message costs only
    latency (the sweep finds the delivery due)."""
    if not deliveries:
        return

    def send() -> None:
        from agents.tasks import webhook_deliver

        for delivery_id, tenant_id in deliveries:
            try:
                webhook_deliver.apply_async((delivery_id, tenant_id), countdown=countdown)
            except Exception:
                logger.warning("could not queue webhook delivery %s; the sweep will", delivery_id)

    transaction.on_commit(send)


def deliveries_create(
    *,
    tenant_id: int,
    event_type: str,
    session_id: int,
    subject: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> list[WebhookDelivery]:
    """One delivery of the event per enabled endpoint subscribed to it (all agents, or the
    session's agent); the deliveries made now (an event already delivered adds nothing)."""
    now = now or timezone.now()
    made: list[WebhookDelivery] = []
    with tenant_scope(tenant_id):
        agent_id = Session.objects.filter(pk=session_id).values_list("agent_id", flat=True).first()
        if agent_id is None:
            return []
        endpoints = WebhookEndpoint.objects.filter(
            Q(agent__isnull=True) | Q(agent_id=agent_id), enabled=True
        ).order_by("pk")
        event_id = webhook_payloads.event_id_for(
            tenant_id=tenant_id, event_type=event_type, session_id=session_id,
            run=int((subject or {}).get("run") or 1),
        )  # fmt: skip
        for endpoint in endpoints:
            if event_type not in endpoint.events:
                continue
            delivery, created = WebhookDelivery.objects.get_or_create(
                idempotency_key=f"{endpoint.pk}:{event_id}",
                defaults={
                    "tenant_id": tenant_id,
                    "endpoint": endpoint,
                    "session_id": session_id,
                    "event_type": event_type,
                    "event_id": event_id,
                    "subject": subject or {},
                    "next_attempt_at": now,
                },
            )
            if created:
                made.append(delivery)
    _enqueue_on_commit([(delivery.pk, tenant_id) for delivery in made])
    return made


def budget_deliveries_create(
    *, tenant_id: int, alert_id: int, now: datetime | None = None
) -> list[WebhookDelivery]:
    """One ``budget.threshold`` delivery per enabled endpoint subscribed to it (whatever agent
    it is limited to: a budget is the whole tenant's), its payload frozen now; an alert already
    delivered adds nothing."""
    now = now or timezone.now()
    made: list[WebhookDelivery] = []
    event_type = WebhookEndpoint.Event.BUDGET_THRESHOLD
    with tenant_scope(tenant_id):
        alert = BudgetAlert.objects.filter(pk=alert_id).first()
        if alert is None:
            return []
        tenant = Tenant.objects.get(pk=tenant_id)
        event_id = webhook_payloads.budget_event_id(
            tenant_id=tenant_id, month=alert.month, threshold_percent=alert.threshold_percent
        )
        payload = webhook_payloads.budget_threshold_payload(
            tenant=tenant, event_id=event_id, alert=alert
        )
        for endpoint in WebhookEndpoint.objects.filter(enabled=True).order_by("pk"):
            if event_type not in endpoint.events:
                continue
            delivery, created = WebhookDelivery.objects.get_or_create(
                idempotency_key=f"{endpoint.pk}:{event_id}",
                defaults={
                    "tenant_id": tenant_id, "endpoint": endpoint, "event_type": event_type,
                    "event_id": event_id, "subject": {"budget_alert_id": alert.pk},
                    "payload": payload, "next_attempt_at": now,
                },
            )  # fmt: skip
            if created:
                made.append(delivery)
    _enqueue_on_commit([(delivery.pk, tenant_id) for delivery in made])
    return made


def _on_budget_threshold(sender: Any, *, tenant_id: int, alert_id: int, **kwargs: Any) -> None:
    budget_deliveries_create(tenant_id=tenant_id, alert_id=alert_id)


def _on_lifecycle(event_type: str) -> Callable[..., None]:
    def receiver(sender: Any, *, session_id: int, tenant_id: int, **kwargs: Any) -> None:
        subject = {
            name: kwargs[name] for name in ("analysis_id", "recording_id", "run") if name in kwargs
        }
        deliveries_create(
            tenant_id=tenant_id, event_type=event_type, session_id=session_id, subject=subject
        )

    receiver.__name__ = f"webhooks_on_{event_type.replace('.', '_')}"
    return receiver


def signals_connect() -> None:
    """Listen to the session lifecycle (called once from the app's ``ready``)."""
    from agents import signals

    budget_threshold_reached.connect(
        _on_budget_threshold, weak=False, dispatch_uid="agents.webhooks.budget.threshold"
    )
    for signal, event_type in (
        (signals.session_started, WebhookEndpoint.Event.SESSION_STARTED),
        (signals.session_ended, WebhookEndpoint.Event.SESSION_ENDED),
        (signals.session_analyzed, WebhookEndpoint.Event.SESSION_ANALYZED),
        (signals.recording_ready, WebhookEndpoint.Event.RECORDING_READY),
    ):
        signal.connect(
            _on_lifecycle(str(event_type)), weak=False, dispatch_uid=f"agents.webhooks.{event_type}"
        )


def delivery_payload(delivery: WebhookDelivery) -> dict[str, Any]:
    """The delivery's payload, built now if it has none yet, then frozen (inside the scope)."""
    if delivery.payload is not None:
        return delivery.payload
    tenant = Tenant.objects.get(pk=delivery.tenant_id)
    session = Session.objects.filter(pk=delivery.session_id).first()
    if session is None:  # erased before its first attempt: nothing about it may leave
        raise LookupError("the session is gone")
    payload = webhook_payloads.session_event_payload(
        tenant=tenant, event_type=delivery.event_type, event_id=delivery.event_id,
        session=session, subject=delivery.subject,
    )  # fmt: skip
    WebhookDelivery.objects.filter(pk=delivery.pk, payload__isnull=True).update(payload=payload)
    delivery.refresh_from_db(fields=["payload"])
    assert delivery.payload is not None
    return delivery.payload


# --- attempts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    http_status: int | None
    latency_ms: int
    error_kind: str = ""
    error_message: str = ""
    response_excerpt: str = ""

    @property
    def succeeded(self) -> bool:
        return not self.error_kind


def request_for(
    *, delivery: WebhookDelivery, payload: dict[str, Any], secrets_: tuple[str, ...]
) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of one attempt. The nonce is in the body as well as its header, so
    it is signed: a receiver remembering the nonces of the last 300 s refuses a replay."""
    nonce = secrets.token_hex(16)
    body = json.dumps({**payload, "nonce": nonce}, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = [
        ("Content-Type", "application/json"),
        ("User-Agent", USER_AGENT),
        ("X-VP-Timestamp", timestamp),
        ("X-VP-Signature", signatures(secrets_, timestamp, body)),
        ("X-VP-Nonce", nonce),
        ("X-VP-Event", delivery.event_type),
        ("X-VP-Delivery", str(delivery.pk)),
    ]
    return body, headers


def _post(*, url: str, body: bytes, headers: list[tuple[str, str]], tenant_id: int) -> Outcome:
    client = outbound.OutboundClient(
        allow_private=settings.VP_ALLOW_PRIVATE_WEBHOOKS, max_response_bytes=MAX_RESPONSE_BYTES
    )
    timeout = settings.VP_TENANT_WEBHOOK_TIMEOUT_SECONDS
    started = time.monotonic()
    try:
        response = asyncio.run(
            client.request(
                "POST",
                url,
                tenant=("webhooks", tenant_id),
                timeout=timeout,
                body=body,
                headers=headers,
            )  # fmt: skip
        )
    except outbound.OutboundError as error:
        latency = round((time.monotonic() - started) * 1000)
        return Outcome(None, latency, error.kind, error.message[:300])
    latency = round((time.monotonic() - started) * 1000)
    excerpt = response.body.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
    if 200 <= response.status < 300:
        return Outcome(response.status, latency, response_excerpt=excerpt)
    kind = "gone" if response.status == 410 else "http_error"
    return Outcome(
        response.status, latency, kind, f"the endpoint answered HTTP {response.status}", excerpt
    )


def _claim(delivery_id: int, *, now: datetime, due_only: bool) -> str | None:
    """Take the delivery for one attempt (None: it is not due, or another attempt has it)."""
    token = uuid.uuid4().hex
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    deliveries = WebhookDelivery.objects.filter(free, pk=delivery_id)
    if due_only:
        deliveries = deliveries.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
        )
    claimed = deliveries.update(
        claim_token=token, claimed_until=now + timedelta(seconds=CLAIM_SECONDS)
    )
    return token if claimed else None


def delivery_attempt(
    *, delivery_id: int, now: datetime | None = None, manual: bool = False
) -> WebhookAttempt | None:
    """One attempt of a delivery (inside its tenant's scope); None when there was none to make
    (not due, already in flight, already finished).

    ``manual`` ("send again" in the console) posts the same event once more whatever the
    delivery's state: a success finishes it, a failure leaves its schedule as it was.
    """
    now = now or timezone.now()
    token = _claim(delivery_id, now=now, due_only=not manual)
    if token is None:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.enabled and not manual:
        outcome = Outcome(None, 0, "endpoint_disabled", "the endpoint is turned off; not sent")
    else:
        try:
            payload = delivery_payload(delivery)
        except LookupError as error:
            outcome = Outcome(None, 0, "session_gone", str(error))
        else:
            tenant = Tenant.objects.get(pk=delivery.tenant_id)
            body, headers = request_for(
                delivery=delivery, payload=payload, secrets_=tenant.webhook_signing_secrets()
            )
            outcome = _post(url=endpoint.url, body=body, headers=headers, tenant_id=tenant.pk)
    return _attempt_record(delivery_id, token=token, now=now, outcome=outcome, manual=manual)


def _attempt_record(
    delivery_id: int, *, token: str, now: datetime, outcome: Outcome, manual: bool
) -> WebhookAttempt:
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        number = WebhookAttempt.objects.filter(delivery=delivery).count() + 1
        attempt = WebhookAttempt.objects.create(
            tenant_id=delivery.tenant_id, delivery=delivery, number=number, manual=manual,
            attempted_at=now, http_status=outcome.http_status, latency_ms=outcome.latency_ms,
            error_kind=outcome.error_kind, error_message=outcome.error_message,
            response_excerpt=outcome.response_excerpt,
        )  # fmt: skip
        if delivery.claim_token != token:  # our lease ran out and another attempt took over
            return attempt
        delivery.attempts = number
        is_ping = delivery.event_type == webhook_payloads.PING
        delivery.first_attempt_at = delivery.first_attempt_at or now
        delivery.claim_token, delivery.claimed_until = "", None
        if outcome.succeeded:
            delivery.status = WebhookDelivery.Status.SUCCEEDED
            delivery.finished_at = now
        elif not manual or is_ping:  # a manual failure leaves the schedule as it was
            later = None
            if outcome.error_kind not in FINAL_ERRORS and not is_ping:
                automatic = WebhookAttempt.objects.filter(delivery=delivery, manual=False)
                later = retry_at(
                    first_attempt_at=delivery.first_attempt_at, attempts=automatic.count(), now=now
                )
            if later is None:
                delivery.status = WebhookDelivery.Status.FAILED
                delivery.finished_at = now
            else:
                delivery.next_attempt_at = later
        delivery.save(
            update_fields=[
                "attempts", "first_attempt_at", "claim_token", "claimed_until", "status",
                "finished_at", "next_attempt_at",
            ]
        )  # fmt: skip
    logger.info(
        "webhook delivery %s (%s, tenant %s) attempt %s: %s in %s ms -> %s",
        delivery.pk, delivery.event_type, delivery.tenant_id, number,
        outcome.http_status or outcome.error_kind, outcome.latency_ms, delivery.status,
    )  # fmt: skip
    if outcome.error_kind == "gone":
        _endpoint_turn_off(delivery.endpoint_id, tenant_id=delivery.tenant_id, now=now)
    if delivery.status == WebhookDelivery.Status.PENDING and not manual:
        wait = (delivery.next_attempt_at - now).total_seconds()
        if wait <= COUNTDOWN_LIMIT_S:
            _enqueue_on_commit([(delivery.pk, delivery.tenant_id)], countdown=max(wait, 0))
    return attempt


def _endpoint_turn_off(endpoint_id: int, *, tenant_id: int, now: datetime) -> None:
    reason = f"Turned off on {now:%Y-%m-%d %H:%M} UTC: the endpoint answered 410 Gone."
    turned = WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).update(
        enabled=False, disabled_reason=reason
    )
    if turned:
        endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
        audit_record(
            tenant=tenant_id, actor=None, action="webhook_endpoint.disabled", target=endpoint,
            changes={"enabled": False, "reason": reason},
        )  # fmt: skip


def delivery_send_again(*, delivery: WebhookDelivery) -> WebhookAttempt | None:
    """The console's "send again": the same event (same id, same payload), posted now."""
    return delivery_attempt(delivery_id=delivery.pk, manual=True)


def endpoint_send_test(*, endpoint: WebhookEndpoint) -> WebhookAttempt:
    """The console's "send test": a ``ping`` event, posted now, not retried."""
    now = timezone.now()
    tenant = Tenant.objects.get(pk=endpoint.tenant_id)
    event_id = webhook_payloads.new_ping_id()
    delivery = WebhookDelivery.objects.create(
        tenant=tenant, endpoint=endpoint, event_type=webhook_payloads.PING, event_id=event_id,
        idempotency_key=f"{endpoint.pk}:{event_id}", next_attempt_at=now,
        payload=webhook_payloads.ping_payload(tenant=tenant, event_id=event_id, endpoint=endpoint),
    )  # fmt: skip
    attempt = delivery_attempt(delivery_id=delivery.pk, now=now, manual=True)
    assert attempt is not None  # a new delivery nobody else can have claimed
    return attempt


# --- the sweep ---------------------------------------------------------------------------------


def deliveries_due(*, now: datetime, limit: int) -> list[tuple[int, int]]:
    """(delivery id, tenant id) of pending deliveries due by ``now`` and not in flight."""
    with scopes_disabled():
        return list(
            WebhookDelivery.objects.filter(
                Q(claimed_until__isnull=True) | Q(claimed_until__lte=now),
                status=WebhookDelivery.Status.PENDING,
                next_attempt_at__lte=now,
            )
            .order_by("next_attempt_at", "pk")
            .values_list("pk", "tenant_id")[:limit]
        )


def deliveries_sweep(
    *, now: datetime | None = None, inline: bool = False, limit: int = 1000
) -> int:
    """Send what is due and not in flight (beat, every 30 s): queued as tasks, or with
    ``inline`` attempted here in turn with the same clock (tests, ``manage.py shell``).
    Returns how many deliveries were due."""
    now = now or timezone.now()
    due = deliveries_due(now=now, limit=limit)
    if inline:
        for delivery_id, tenant_id in due:
            with tenant_scope(tenant_id):
                delivery_attempt(delivery_id=delivery_id, now=now)
    else:
        _enqueue_on_commit(due)
    return len(due)
