"""Every console page of a tenant, enumerated from the URL conf (a new page is covered without
editing a list), and a tenant populated so that each page has something to show — long values
included, so that a page that does not wrap them overflows a phone's width.

``populate`` runs in the test's database or, for the browser tests, inside the platform's own
process (``manage.py shell``), so it imports lazily and returns plain ids.
"""

from __future__ import annotations

from typing import Any

from django.urls import get_resolver, reverse

LONG_WORD = "https://shop.example.com/orders/" + "A1B2C3D4" * 12  # one unbreakable token


def tenant_page_routes() -> dict[str, list[str]]:
    """URL name → the keyword arguments it takes besides ``tenant_slug``."""
    routes: dict[str, list[str]] = {}
    for name, patterns in get_resolver().reverse_dict.lists():
        if not isinstance(name, str):
            continue
        for possibility, *_ in patterns:
            params = possibility[0][1]
            if "tenant_slug" in params:
                routes[name] = [p for p in params if p != "tenant_slug"]
    return routes


def tenant_page_urls(slug: str, ids: dict[str, Any]) -> dict[str, str]:
    urls = {}
    for name, params in sorted(tenant_page_routes().items()):
        missing = [p for p in params if p not in ids]
        assert not missing, f"{name} needs {missing}: add them to tests/console/pages.populate"
        urls[name] = reverse(name, kwargs={"tenant_slug": slug, **{p: ids[p] for p in params}})
    return urls


def populate(slug: str) -> dict[str, int]:
    """Objects of every kind in tenant ``slug`` (whose first owner acts), with long values."""
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from django.utils import timezone

    from agents.configuration import agent_create, agent_publish, agent_update
    from agents.models import (
        PhoneNumber,
        Session,
        SessionSegment,
        TranscriptItem,
        WebhookAttempt,
        WebhookDelivery,
        WebhookEndpoint,
    )
    from billing.services import credit_note_issue, invoice_close_month, usage_event_record
    from tenants import crypto, services
    from tenants.models import Membership, Role, Tenant
    from tenants.scoping import scopes_disabled, tenant_scope

    with scopes_disabled():
        tenant = Tenant.objects.get(slug=slug)
        owner = Membership.objects.filter(tenant=tenant, role=Role.OWNER).first().user
    agent = agent_create(
        tenant=tenant, actor=owner,
        fields={"name": "Order helper with a rather long name for a phone screen",
                "provider": "local", "instructions": "Help with orders. " + LONG_WORD},
    )  # fmt: skip
    first_version = agent.live_version
    agent_update(
        agent=agent, actor=owner,
        fields={"tools": [{"type": "function", "name": "lookup_order_status_by_number",
                           "description": "Find an order. " + LONG_WORD,
                           "parameters": {"type": "object", "properties": {
                               "order_number": {"type": "string"}}},
                           "execution": "webhook", "webhook_url": LONG_WORD,
                           "timeout_seconds": 10}]},
    )  # fmt: skip
    agent_publish(agent, owner)  # two versions: the first can be made live again
    api_key, _ = services.api_key_issue(tenant=tenant, name="Backend " + "x" * 60)
    widget_key = services.widget_key_create(
        tenant=tenant, name="Shop widget", agent=agent, actor=owner,
        allowed_origins=["https://shop.example.com", "https://www.a-very-long-domain-name.example"],
    )  # fmt: skip
    invitation, _ = services.invitation_create(
        tenant=tenant, email="someone.with.a.long.address@example.com", role=Role.VIEWER,
        actor=owner,
    )  # fmt: skip
    now = timezone.now()
    with tenant_scope(tenant):
        session = Session.objects.create(
            tenant=tenant, agent=agent, agent_version=agent.live_version, channel="widget",
            model="gpt-realtime-2", end_user_hash="7" * 32,
        )  # fmt: skip
        SessionSegment.objects.create(
            tenant=tenant, session=session, index=0, upstream_session_id="sess_" + "x" * 40,
            reason="initial", started_at=now,
        )  # fmt: skip
        items = [
            ("user", "message", "Where is my order? " + LONG_WORD, {}),
            ("assistant", "function_call", "lookup_order_status_by_number",
             {"name": "lookup_order_status_by_number", "call_id": "call_1",
              "arguments": '{"order_number": "' + "9" * 80 + '"}'}),
            ("tool", "function_call_output", '{"tracking": "' + LONG_WORD + '"}',
             {"name": "lookup_order_status_by_number", "call_id": "call_1", "latency_ms": 237}),
            ("assistant", "message", "It has shipped.", {}),
        ]  # fmt: skip
        for sequence, (role, kind, text, data) in enumerate(items):
            TranscriptItem.objects.create(
                tenant=tenant, session=session, sequence=sequence,
                upstream_item_id=f"item_{sequence}", role=role, kind=kind, text=text, data=data,
            )  # fmt: skip
        phone_number = PhoneNumber.objects.create(
            tenant=tenant, number="+14155550123", agent=agent,
            twilio_auth_token_encrypted=crypto.encrypt("t" * 32), twilio_auth_token_masked="…tttt",
        )  # fmt: skip
        endpoint = WebhookEndpoint.objects.create(
            tenant=tenant, url=LONG_WORD, events=["session.ended"], description="CRM " + "y" * 80
        )
        delivery = WebhookDelivery.objects.create(
            tenant=tenant, endpoint=endpoint, session=session, event_type="session.ended",
            event_id="evt_" + "e" * 40, idempotency_key=f"{endpoint.pk}:evt_1",
            payload={"type": "session.ended"}, next_attempt_at=now,
        )  # fmt: skip
        WebhookAttempt.objects.create(
            tenant=tenant, delivery=delivery, number=1, attempted_at=now, http_status=500,
            latency_ms=120, error_kind="http_error", error_message="Server error " + "z" * 100,
            response_excerpt=LONG_WORD,
        )  # fmt: skip
        membership_id = Membership.objects.get(user=owner).pk
    usage_event_record(
        tenant_id=tenant.pk, session_id=None, agent_id=agent.pk, provider="openai",
        model="gpt-realtime-2", key=f"resp_{slug}_1", status="completed",
        usage={"output_token_details": {"audio_tokens": 1000}}, audio_ms=0,
        occurred_at=datetime(2026, 10, 3, tzinfo=UTC),
    )  # fmt: skip
    invoice = invoice_close_month(
        tenant_id=tenant.pk, month=date(2026, 10, 1), now=datetime(2026, 11, 2, tzinfo=UTC)
    )
    credit_note = credit_note_issue(
        invoice_id=invoice.pk, subtotal=Decimal("0.01"), reason="Goodwill " + LONG_WORD, actor=None
    )
    return {
        "agent_id": agent.pk,
        "version_id": first_version.pk,
        "session_id": session.pk,
        "api_key_id": api_key.pk,
        "widget_key_id": widget_key.pk,
        "membership_id": membership_id,
        "invitation_id": invitation.pk,
        "phone_number_id": phone_number.pk,
        "endpoint_id": endpoint.pk,
        "delivery_id": delivery.pk,
        "invoice_id": invoice.pk,
        "credit_note_id": credit_note.pk,
    }
