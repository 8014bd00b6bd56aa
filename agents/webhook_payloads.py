"""What a tenant webhook says: the JSON of each event, built from rows.

Every event has the same envelope (``id``, ``type``, ``created``, ``tenant``, ``agent``,
``session``) and its own part: ``session.ended`` adds the transcript, the cost and the end;
``session.analyzed`` the analysis; ``recording.ready`` the recording. Each payload is built once,
at the delivery's first attempt (by then the transcript is complete), and frozen in the delivery.

Conversation content leaves the platform here, so every piece of it goes through
:func:`_content_for_sending` (the tenant's data policy applies there).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from agents import privacy, recordings
from agents.models import (
    Agent,
    Recording,
    Session,
    SessionAnalysis,
    TranscriptItem,
    WebhookEndpoint,
)
from billing import pricing
from billing.models import BudgetAlert, UsageEvent
from billing.selectors import events_total_cost, plan_terms
from tenants.models import Tenant

PING = "ping"
EVENT_TYPES = (*WebhookEndpoint.Event.values, PING)
# Event ids are derived from what they are about, so the same event always has the same id
# (a repeated lifecycle signal, "send again"): receivers can deduplicate on it.
_EVENT_NAMESPACE = uuid.UUID("4f1c6c2e-8f57-4d0b-9a57-6f0c1e3a9b21")


def event_id_for(*, tenant_id: int, event_type: str, session_id: int | None, run: int = 1) -> str:
    """The event's id: one per (tenant, event type, session), and per run of an analysis an
    admin asked again for (a new result is a new event)."""
    name = f"{tenant_id}:{event_type}:{session_id}" + (f":run{run}" if run > 1 else "")
    return f"evt_{uuid.uuid5(_EVENT_NAMESPACE, name).hex}"


def new_ping_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def _content_for_sending(tenant: Tenant, value: Any) -> Any:
    """Conversation content (text, or JSON holding it) as it may leave the platform for this
    tenant: the one door for its data policy (redacted, or emptied under "metadata only")."""
    return privacy.value_for_storage(tenant.data_policy, value)


def _analysis_payload(analysis_id: int | None) -> dict[str, Any] | None:
    """The post-call analysis as sent: summary, success evaluation, the extracted data in the
    agent's schema, and how it was made (stored content: already under the data policy)."""
    analysis = SessionAnalysis.objects.filter(pk=analysis_id).first()
    if analysis is None:  # erased since
        return None
    return {
        "id": analysis.pk,
        "run": analysis.run,
        "status": analysis.status,
        "method": analysis.method,
        "model": analysis.model,
        "summary": analysis.summary,
        "success": {"result": analysis.success, "reason": analysis.success_reason},
        "data": analysis.data,
        "data_valid": analysis.data_valid,
        "data_problem": analysis.data_problem,
        "rule_extracted_fields": analysis.rule_fields,
        "completed_at": _iso(analysis.completed_at),
    }


def _recording_payload(recording_id: int | None) -> dict[str, Any] | None:
    """The recording as sent: what it is and a signed link to download it (no login needed;
    it expires after ``VP_RECORDING_LINK_SECONDS``). None once it is no longer kept."""
    recording = Recording.objects.filter(pk=recording_id, status=Recording.Status.READY).first()
    if recording is None:
        return None
    expires = timezone.now() + timedelta(seconds=settings.VP_RECORDING_LINK_SECONDS)
    return {
        "id": recording.pk,
        "format": recording.format,
        "duration_ms": recording.duration_ms,
        "bytes": recording.bytes,
        "download_url": recordings.recording_link(recording),
        "download_url_expires_at": _iso(expires),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else timezone.localtime(moment, UTC).isoformat()


def session_console_url(tenant: Tenant, session_id: int) -> str:
    return settings.VP_PUBLIC_URL + reverse("session-detail", args=[tenant.slug, session_id])


def _envelope(
    *, tenant: Tenant, event_type: str, event_id: str, agent: Agent | None
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "created": _iso(timezone.now()),
        "tenant": {"id": tenant.pk, "slug": tenant.slug, "name": tenant.name},
        "agent": None if agent is None else {"id": agent.pk, "name": agent.name},
    }


def _session_part(session: Session) -> dict[str, Any]:
    return {
        "id": session.pk,
        "channel": session.channel,
        "model": session.model,
        "agent_version_id": session.agent_version_id,
        "end_user_hash": session.end_user_hash,
        "started_at": _iso(session.started_at),
    }


def _transcript(tenant: Tenant, session: Session) -> list[dict[str, Any]]:
    items = TranscriptItem.objects.filter(session=session).order_by("sequence", "pk")
    return [
        {
            "sequence": item.sequence,
            "role": item.role,
            "kind": item.kind,
            "text": _content_for_sending(tenant, item.text),
            "data": _content_for_sending(tenant, item.data),
            "created_at": _iso(item.created_at),
        }
        for item in items
    ]


def session_event_payload(
    *,
    tenant: Tenant,
    event_type: str,
    event_id: str,
    session: Session,
    subject: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The payload of one lifecycle event of ``session`` (inside the tenant's scope)."""
    subject = subject or {}
    agent = Agent.objects.filter(pk=session.agent_id).first()
    payload = _envelope(tenant=tenant, event_type=event_type, event_id=event_id, agent=agent)
    payload["session"] = _session_part(session)
    payload["links"] = {"session": session_console_url(tenant, session.pk)}
    if event_type == WebhookEndpoint.Event.SESSION_ENDED:
        payload["session"].update(
            ended_at=_iso(session.ended_at),
            end_reason=session.end_reason,
            duration_seconds=session.duration_seconds,
            audio_in_seconds=session.audio_in_seconds,
            audio_out_seconds=session.audio_out_seconds,
        )
        payload["transcript"] = _transcript(tenant, session)
        cost = events_total_cost(UsageEvent.objects.filter(session=session))
        billed = pricing.with_markup(cost, plan_terms(tenant_id=tenant.pk).markup_percent)
        # The billed amount (what the tenant is invoiced for it, unrounded), as in the console.
        payload["cost"] = {"currency": "USD", "amount": str(billed), "basis": "billed"}
    elif event_type == WebhookEndpoint.Event.SESSION_ANALYZED:
        payload["analysis"] = _content_for_sending(
            tenant, _analysis_payload(subject.get("analysis_id"))
        )
    elif event_type == WebhookEndpoint.Event.RECORDING_READY:
        payload["recording"] = _recording_payload(subject.get("recording_id"))
    return payload


def budget_event_id(*, tenant_id: int, month: date, threshold_percent: int) -> str:
    """One ``budget.threshold`` event per tenant, month and threshold."""
    name = f"{tenant_id}:budget.threshold:{month:%Y-%m}:{threshold_percent}"
    return f"evt_{uuid.uuid5(_EVENT_NAMESPACE, name).hex}"


def budget_threshold_payload(
    *, tenant: Tenant, event_id: str, alert: BudgetAlert
) -> dict[str, Any]:
    """A monthly budget threshold crossed: the envelope (no agent, no session) and the figures,
    billed amounts (what the tenant is invoiced), month to date in UTC."""
    payload = _envelope(
        tenant=tenant, event_type=WebhookEndpoint.Event.BUDGET_THRESHOLD, event_id=event_id,
        agent=None,
    )  # fmt: skip
    payload["session"] = None
    payload["budget"] = {
        "month": f"{alert.month:%Y-%m}",
        "threshold_percent": alert.threshold_percent,
        "budget_usd": str(alert.budget_usd),
        "spend_usd": str(alert.spend_usd),
        "amount_basis": "billed",
        "crossed_at": _iso(alert.created_at),
    }
    payload["links"] = {
        "usage": settings.VP_PUBLIC_URL + reverse("billing-usage", args=[tenant.slug])
    }
    return payload


def ping_payload(*, tenant: Tenant, event_id: str, endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The console's test event: the envelope and nothing about any session."""
    agent = Agent.objects.filter(pk=endpoint.agent_id).first() if endpoint.agent_id else None
    payload = _envelope(tenant=tenant, event_type=PING, event_id=event_id, agent=agent)
    payload["session"] = None
    payload["message"] = "A test event from VoicePlatform: this endpoint is reachable."
    return payload
