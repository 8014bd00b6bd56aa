import re

import pytest
from django.urls import get_resolver, reverse

from tenants import services
from tenants.models import ApiKey, ProviderCredential, WidgetKey
from tenants.scoping import scopes_disabled

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789WXYZ"


@pytest.fixture
def objects_b(world):
    from agents.configuration import agent_create, agent_update
    from agents.models import PhoneNumber, Session, WebhookDelivery, WebhookEndpoint
    from tenants import crypto
    from tenants.models import Membership
    from tenants.scoping import tenant_scope

    api_key, _ = services.api_key_issue(tenant=world.tenant_b, name="B backend")
    widget_key = services.widget_key_create(
        tenant=world.tenant_b, name="B widget", allowed_origins=["https://b.example"]
    )
    services.provider_credential_set(tenant=world.tenant_b, secret=SECRET)
    agent = agent_create(
        tenant=world.tenant_b, actor=world.owner_b, fields={"name": "B agent", "provider": "local"}
    )
    first_version = agent.live_version
    agent_update(agent=agent, actor=world.owner_b, fields={"instructions": "B secret prompt"})
    with tenant_scope(world.tenant_b):
        session = Session.objects.create(
            tenant=world.tenant_b, agent=agent, channel="widget", model="gpt-realtime-2"
        )
        membership = Membership.objects.get(user=world.owner_b)
        phone_number = PhoneNumber.objects.create(
            tenant=world.tenant_b, number="+14155550199", agent=agent,
            twilio_auth_token_encrypted=crypto.encrypt("b" * 32), twilio_auth_token_masked="…bbbb",
        )  # fmt: skip
        endpoint = WebhookEndpoint.objects.create(
            tenant=world.tenant_b, url="https://hooks.b.example/vp", events=["session.ended"]
        )
        delivery = WebhookDelivery.objects.create(
            tenant=world.tenant_b, endpoint=endpoint, session=session, event_type="session.ended",
            event_id="evt_b", idempotency_key=f"{endpoint.pk}:evt_b", payload={"b": "secret"},
            next_attempt_at=session.started_at,
        )  # fmt: skip
    invoice = _invoice_of(world.tenant_b, agent)
    from decimal import Decimal

    from billing.services import credit_note_issue

    credit_note = credit_note_issue(invoice_id=invoice.pk, subtotal=Decimal("0.01"),
                                    reason="B's correction", actor=None)  # fmt: skip
    invitation, _ = services.invitation_create(
        tenant=world.tenant_b, email="someone@b.example", role="viewer", actor=world.owner_b
    )
    return {
        "invitation_id": invitation.pk,
        "endpoint_id": endpoint.pk,
        "delivery_id": delivery.pk,
        "api_key_id": api_key.pk,
        "widget_key_id": widget_key.pk,
        "agent_id": agent.pk,
        "version_id": first_version.pk,
        "session_id": session.pk,
        "membership_id": membership.pk,
        "phone_number_id": phone_number.pk,
        "invoice_id": invoice.pk,
        "credit_note_id": credit_note.pk,
    }


def _invoice_of(tenant, agent):
    from datetime import UTC, date, datetime

    from billing.services import invoice_close_month, usage_event_record

    usage_event_record(
        tenant_id=tenant.pk, session_id=None, agent_id=agent.pk, provider="openai",
        model="gpt-realtime-2", key="resp_b_1", status="completed",
        usage={"output_token_details": {"audio_tokens": 1000}}, audio_ms=0,
        occurred_at=datetime(2026, 10, 3, tzinfo=UTC),
    )  # fmt: skip
    return invoice_close_month(
        tenant_id=tenant.pk, month=date(2026, 10, 1), now=datetime(2026, 11, 2, tzinfo=UTC)
    )


# Every console URL of a tenant, with the object it names. A new console page must be added here:
# test_every_tenant_url_is_covered fails otherwise.
TENANT_URLS = {
    "tenant-dashboard": ("GET", ()),
    "api-key-list": ("GET", ()),
    "api-key-revoke": ("POST", ("api_key_id",)),
    "widget-key-list": ("GET", ()),
    "widget-key-detail": ("GET", ("widget_key_id",)),
    "widget-key-revoke": ("POST", ("widget_key_id",)),
    "credentials": ("GET", ()),
    "data-policy": ("GET", ()),
    "member-list": ("GET", ()),
    "member-role": ("POST", ("membership_id",)),
    "member-remove": ("POST", ("membership_id",)),
    "audit-log": ("GET", ()),
    "invitation-revoke": ("POST", ("invitation_id",)),
    "agent-list": ("GET", ()),
    "agent-create": ("GET", ()),
    "agent-edit": ("GET", ("agent_id",)),
    "agent-duplicate": ("POST", ("agent_id",)),
    "agent-archive": ("POST", ("agent_id",)),
    "agent-versions": ("GET", ("agent_id",)),
    "agent-publish": ("POST", ("agent_id",)),
    "agent-rollback": ("POST", ("agent_id", "version_id")),
    "agent-tools": ("GET", ("agent_id",)),
    "agent-tool-delete": ("POST", ("agent_id",)),
    "agent-try": ("GET", ("agent_id",)),
    "agent-try-token": ("POST", ("agent_id",)),
    "session-list": ("GET", ()),
    "phone-number-list": ("GET", ()),
    "phone-number-remove": ("POST", ("phone_number_id",)),
    "session-detail": ("GET", ("session_id",)),
    "session-end": ("POST", ("session_id",)),
    "session-erase": ("POST", ("session_id",)),
    "session-analyze": ("POST", ("session_id",)),
    "session-transcript-export": ("GET", ("session_id",)),
    "session-analytics": ("GET", ()),
    "webhook-list": ("GET", ()),
    "webhook-detail": ("GET", ("endpoint_id",)),
    "webhook-delete": ("POST", ("endpoint_id",)),
    "webhook-test": ("POST", ("endpoint_id",)),
    "webhook-send-again": ("POST", ("endpoint_id", "delivery_id")),
    "erasure-confirm": ("POST", ()),
    "data-retention": ("GET", ()),
    "session-recording": ("GET", ("session_id",)),
    "billing-usage": ("GET", ()),
    "billing-usage-export": ("GET", ()),
    "billing-spend-cap": ("POST", ()),
    "billing-budget": ("POST", ()),
    "invoice-list": ("GET", ()),
    "invoice-detail": ("GET", ("invoice_id",)),
    "invoice-csv": ("GET", ("invoice_id",)),
    "invoice-pdf": ("GET", ("invoice_id",)),
    "invoice-usage-csv": ("GET", ("invoice_id",)),
    "invoice-draft": ("GET", ()),
    "billing-usage-billable": ("GET", ()),
    "billing-profile": ("POST", ()),
    "credit-note-pdf": ("GET", ("credit_note_id",)),
}


def snapshot():
    from agents.models import (
        Agent,
        AgentVersion,
        PhoneNumber,
        Session,
        SessionAnalysis,
        TranscriptItem,
        WebhookAttempt,
        WebhookDelivery,
        WebhookEndpoint,
    )
    from billing.models import TenantBillingProfile
    from tenants.models import AuditEvent, ClientToken, Invitation, Membership

    with scopes_disabled():
        return (
            list(ApiKey.objects.order_by("pk").values_list("pk", "revoked_at", "name")),
            list(WidgetKey.objects.order_by("pk").values_list("pk", "revoked_at", "name")),
            list(ProviderCredential.objects.order_by("pk").values_list("pk", "encrypted_secret")),
            list(Agent.objects.order_by("pk").values_list("pk", "name", "status", "live_version")),
            list(AgentVersion.objects.order_by("pk").values_list("pk", "config")),
            list(Session.objects.order_by("pk").values_list("pk", "ended_at")),
            list(Membership.objects.order_by("pk").values_list("pk", "role")),
            list(ClientToken.objects.order_by("pk").values_list("pk")),
            list(AuditEvent.objects.order_by("pk").values_list("pk")),
            list(PhoneNumber.objects.order_by("pk").values_list("pk", "number", "agent")),
            list(WebhookEndpoint.objects.order_by("pk").values_list("pk", "url", "enabled")),
            list(WebhookDelivery.objects.order_by("pk").values_list("pk", "status", "attempts")),
            list(WebhookAttempt.objects.order_by("pk").values_list("pk")),
            list(SessionAnalysis.objects.order_by("pk").values_list("pk", "run", "status")),
            list(TranscriptItem.objects.order_by("pk").values_list("pk")),
            list(Invitation.objects.order_by("pk").values_list("pk")),
            list(TenantBillingProfile.objects.order_by("pk").values()),
        )


def test_every_tenant_url_is_covered():
    names = {
        name
        for name, patterns in get_resolver().reverse_dict.lists()
        if isinstance(name, str) and any("tenant_slug" in p[0][0][1] for p in patterns)
    }
    assert names == set(TENANT_URLS)


@pytest.mark.parametrize("url_name", sorted(TENANT_URLS))
def test_member_of_a_gets_404_for_tenant_b_objects_and_nothing_changes(
    client, world, objects_b, url_name
):
    method, object_kwargs = TENANT_URLS[url_name]
    client.force_login(world.owner_a)
    before = snapshot()
    kwargs = {name: objects_b[name] for name in object_kwargs}
    # B's objects through A's console, and anything through B's console.
    urls = [reverse(url_name, kwargs={"tenant_slug": "tenant-b", **kwargs})]
    if object_kwargs:
        urls.append(reverse(url_name, kwargs={"tenant_slug": "tenant-a", **kwargs}))
    form = {"name": "x", "secret": SECRET + "Z", "role": "viewer", "kind": "function",
            "email": "x@example.com", "form": "tool", "instructions": "hacked"}  # fmt: skip
    for url in urls:
        response = client.post(url, form) if method == "POST" else client.get(url)
        assert response.status_code == 404, url
        if method == "GET":
            post_response = client.post(url, form)
            assert post_response.status_code in (404, 405), url
    assert snapshot() == before


def test_missing_ids_and_foreign_ids_look_the_same(client, world, objects_b):
    client.force_login(world.owner_a)
    foreign = client.get(
        reverse("widget-key-detail", args=["tenant-a", objects_b["widget_key_id"]])
    )
    missing = client.get(reverse("widget-key-detail", args=["tenant-a", 999999]))
    assert foreign.status_code == missing.status_code == 404
    token = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]+"')
    assert token.sub(b"", foreign.content) == token.sub(b"", missing.content)


def test_anonymous_users_are_sent_to_login(client, world):
    response = client.get(reverse("tenant-dashboard", args=["tenant-a"]))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_login_page_and_login_with_password(client, world):
    page = client.get("/login/")
    assert page.status_code == 200
    assert b"Log in" in page.content
    response = client.post(
        "/login/", {"username": "owner-a@example.com", "password": world.password}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/t/tenant-a/"
    assert b"Tenant A" in response.content


def test_wrong_password_shows_an_error(client, world):
    response = client.post("/login/", {"username": "owner-a@example.com", "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter a correct" in response.content


def test_user_in_two_tenants_can_switch(client, world):
    services.membership_set(tenant=world.tenant_b, user=world.owner_a, role="viewer")
    client.force_login(world.owner_a)
    page = client.get(reverse("tenant-dashboard", args=["tenant-b"]))
    assert page.status_code == 200
    assert b'href="/t/tenant-a/"' in page.content and b'href="/t/tenant-b/"' in page.content
    # The console remembers the last tenant used.
    assert client.get("/console/")["Location"] == "/t/tenant-b/"


def test_viewer_cannot_issue_or_revoke_keys(client, world):
    api_key, _ = services.api_key_issue(tenant=world.tenant_a, name="A backend")
    client.force_login(world.member_a)
    before = snapshot()
    assert client.get(reverse("api-key-list", args=["tenant-a"])).status_code == 200
    assert client.post(reverse("api-key-list", args=["tenant-a"]), {"name": "x"}).status_code == 403
    revoke = reverse("api-key-revoke", args=["tenant-a", api_key.pk])
    assert client.post(revoke).status_code == 403
    credentials = reverse("credentials", args=["tenant-a"])
    assert client.post(credentials, {"secret": SECRET}).status_code == 403
    assert snapshot() == before


def test_owner_issues_a_key_shown_once_then_revokes_it(client, world):
    client.force_login(world.owner_a)
    response = client.post(
        reverse("api-key-list", args=["tenant-a"]),
        {"name": "prod", "scopes": ["realtime", "read", "write"]},
    )
    raw_key = response.context["new_key"]
    assert raw_key.encode() in response.content
    assert raw_key.encode() not in client.get(reverse("api-key-list", args=["tenant-a"])).content
    api_key = services.api_key_authenticate(raw_key)
    client.post(reverse("api-key-revoke", args=["tenant-a", api_key.pk]))
    assert services.api_key_authenticate(raw_key) is None


def test_credential_page_shows_only_the_mask(client, world):
    client.force_login(world.owner_a)
    response = client.post(
        reverse("credentials", args=["tenant-a"]), {"secret": SECRET}, follow=True
    )
    assert b"sk-\xe2\x80\xa6WXYZ" in response.content
    assert SECRET.encode() not in response.content


def test_widget_key_form_validates_origins(client, world):
    client.force_login(world.owner_a)
    url = reverse("widget-key-list", args=["tenant-a"])
    response = client.post(url, {"name": "shop", "allowed_origins": "https://shop.example/path"})
    assert response.status_code == 200
    assert b"an origin has no path" in response.content
    response = client.post(
        url, {"name": "shop", "allowed_origins": "HTTPS://Shop.Example:443\nhttp://localhost:8000"}
    )
    assert response.status_code == 302
    with scopes_disabled():
        assert WidgetKey.objects.get(name="shop").allowed_origins == [
            "https://shop.example",
            "http://localhost:8000",
        ]
