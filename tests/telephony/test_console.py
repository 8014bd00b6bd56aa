"""The console page of phone numbers: owners and admins configure, members read, outsiders get
404; the auth token is stored encrypted, shown masked; every change is audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import PhoneNumber
from tenants import crypto
from tenants.models import AuditEvent
from tenants.scoping import scopes_disabled

from .conftest import AUTH_TOKEN_A, NUMBER_A, NUMBER_B

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("phone_urls")]

NEW_NUMBER = "+14155550177"
NEW_TOKEN = "abcdefabcdefabcdefabcdefabcd4321"


def list_url(tenant) -> str:
    return reverse("phone-number-list", args=[tenant.slug])


def remove_url(tenant, phone_number) -> str:
    return reverse("phone-number-remove", args=[tenant.slug, phone_number.pk])


def numbers() -> list[tuple[int, str]]:
    with scopes_disabled():
        return list(PhoneNumber.objects.order_by("number").values_list("tenant_id", "number"))


def audit_actions() -> list[str]:
    with scopes_disabled():
        return list(
            AuditEvent.objects.filter(action__startswith="phone_number.")
            .order_by("pk")
            .values_list("action", flat=True)
        )


def test_the_list_shows_own_numbers_masked(client, phone):
    client.force_login(phone.world.owner_a)
    response = client.get(list_url(phone.world.tenant_a))
    assert response.status_code == 200
    page = response.content.decode()
    assert NUMBER_A in page and NUMBER_B not in page
    assert "…cdef" in page and AUTH_TOKEN_A not in page
    assert phone.number.twilio_auth_token_encrypted not in page
    assert 'id="webhook-url">http://testserver/twilio/voice<' in page


def test_an_owner_adds_a_number(client, phone):
    client.force_login(phone.world.owner_a)
    body = {"number": "+1 (415) 555-0177", "agent": phone.agent.pk, "twilio_auth_token": NEW_TOKEN}
    response = client.post(list_url(phone.world.tenant_a), body)
    assert response.status_code == 302
    assert response["Location"] == list_url(phone.world.tenant_a)
    with scopes_disabled():
        row = PhoneNumber.objects.get(number=NEW_NUMBER)
    assert (row.tenant_id, row.agent_id) == (phone.world.tenant_a.pk, phone.agent.pk)
    assert row.twilio_auth_token_masked == "…4321"
    assert NEW_TOKEN not in row.twilio_auth_token_encrypted
    assert crypto.decrypt(row.twilio_auth_token_encrypted) == NEW_TOKEN
    with scopes_disabled():
        event = AuditEvent.objects.get(action="phone_number.create", target_id=str(row.pk))
    assert event.tenant_id == phone.world.tenant_a.pk
    assert event.actor_id == phone.world.owner_a.pk
    assert event.changes == {
        "number": NEW_NUMBER,
        "agent": phone.agent.pk,
        "version": "live",
        "auth_token": "…4321",
    }
    page = client.get(list_url(phone.world.tenant_a)).content.decode()
    assert NEW_NUMBER in page and NEW_TOKEN not in page


@pytest.mark.parametrize(
    ("body", "field", "error"),
    [
        ({"number": "0415 555 0177"}, "number", "E.164"),
        ({"number": NUMBER_B}, "number", "already configured"),  # B's number
        ({"twilio_auth_token": "short"}, "twilio_auth_token", "does not look like"),
        ({"agent": "foreign"}, "agent", "Select a valid choice"),
    ],
    ids=["not-e164", "taken", "bad-token", "foreign-agent"],
)
def test_invalid_additions_change_nothing(client, phone, body, field, error):
    client.force_login(phone.world.owner_a)
    before = numbers()
    data = {"number": NEW_NUMBER, "agent": phone.agent.pk, "twilio_auth_token": NEW_TOKEN, **body}
    if data["agent"] == "foreign":
        data["agent"] = phone.other_agent.pk
    response = client.post(list_url(phone.world.tenant_a), data)
    assert response.status_code == 200
    assert error in " ".join(response.context["form"].errors[field])
    assert NEW_TOKEN not in response.content.decode()  # not echoed back into the form
    assert numbers() == before
    assert audit_actions() == ["phone_number.create", "phone_number.create"]  # the fixture's


def test_a_member_who_cannot_configure_reads_but_cannot_change(client, phone):
    client.force_login(phone.world.member_a)  # a viewer
    assert client.get(list_url(phone.world.tenant_a)).status_code == 200
    before = numbers()
    body = {"number": NEW_NUMBER, "agent": phone.agent.pk, "twilio_auth_token": NEW_TOKEN}
    assert client.post(list_url(phone.world.tenant_a), body).status_code == 403
    assert client.post(remove_url(phone.world.tenant_a, phone.number)).status_code == 403
    assert numbers() == before
    assert audit_actions() == ["phone_number.create", "phone_number.create"]


def test_an_outsider_gets_404(client, phone):
    client.force_login(phone.world.owner_b)
    before = numbers()
    assert client.get(list_url(phone.world.tenant_a)).status_code == 404
    body = {"number": NEW_NUMBER, "agent": phone.agent.pk, "twilio_auth_token": NEW_TOKEN}
    assert client.post(list_url(phone.world.tenant_a), body).status_code == 404
    # A's number through B's own console: the same 404 as a missing one.
    foreign = client.post(remove_url(phone.world.tenant_b, phone.number))
    missing = client.post(reverse("phone-number-remove", args=[phone.world.tenant_b.slug, 99999]))
    assert foreign.status_code == missing.status_code == 404
    assert numbers() == before
    assert audit_actions() == ["phone_number.create", "phone_number.create"]


def test_an_owner_removes_a_number(client, phone):
    client.force_login(phone.world.owner_a)
    assert client.get(remove_url(phone.world.tenant_a, phone.number)).status_code == 405
    response = client.post(remove_url(phone.world.tenant_a, phone.number))
    assert response.status_code == 302
    assert numbers() == [(phone.world.tenant_b.pk, NUMBER_B)]
    with scopes_disabled():
        event = AuditEvent.objects.get(action="phone_number.delete")
    assert (event.tenant_id, event.actor_id) == (phone.world.tenant_a.pk, phone.world.owner_a.pk)
    assert event.target_label == NUMBER_A
    assert event.changes == {"number": NUMBER_A, "id": phone.number.pk}


def test_anonymous_users_are_sent_to_login(client, phone):
    response = client.get(list_url(phone.world.tenant_a))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
