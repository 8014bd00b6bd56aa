"""``POST /twilio/voice``: TwiML with a single-use stream token for a signed call to a configured
number; refusals for bad signatures, unknown numbers and tenants that may not take calls."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from agents.models import Agent, Session
from agents.services import end_user_hash
from agents.telephony import UNAVAILABLE_MESSAGE, UNKNOWN_NUMBER_MESSAGE
from tenants.models import ClientToken, Tenant
from tenants.scoping import scopes_disabled, tenant_scope

from .conftest import (
    AUTH_TOKEN_A,
    AUTH_TOKEN_B,
    CALLER,
    NUMBER_A,
    NUMBER_B,
    call_params,
    signed_headers,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("phone_urls")]

REJECTION = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f"<Response><Say>{UNKNOWN_NUMBER_MESSAGE}</Say><Hangup/></Response>"
)
UNAVAILABLE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f"<Response><Say>{UNAVAILABLE_MESSAGE}</Say><Hangup/></Response>"
)


def post_call(client, params, headers, **extra):
    return client.post("/twilio/voice", params, headers=headers, **extra)


def nothing_recorded() -> None:
    with scopes_disabled():
        assert ClientToken.objects.count() == 0
        assert Session.objects.count() == 0


def test_a_signed_call_gets_a_stream_with_a_token(client, phone):
    params = call_params()
    response = post_call(client, params, signed_headers(params))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml; charset=utf-8"
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    (connect,) = list(root)
    assert connect.tag == "Connect"
    (stream,) = list(connect)
    assert stream.tag == "Stream"
    assert stream.attrib == {"url": "ws://testserver/twilio/stream/"}
    parameters = {parameter.attrib["name"]: parameter.attrib["value"] for parameter in stream}
    # The stream token, and the number called (its auth token controls the call: transfers);
    # no prompt variables for an agent that declares none (the caller's number stays here).
    assert list(parameters) == ["token", "number"]
    assert parameters["number"] == NUMBER_A
    token = parameters["token"]
    assert token.startswith("vp_ek_")
    with scopes_disabled():
        (row,) = ClientToken.objects.all()
        assert Session.objects.count() == 0
    assert row.tenant_id == phone.world.tenant_a.pk
    assert row.agent_id == phone.agent.pk
    assert row.kind == ClientToken.Kind.EPHEMERAL
    assert row.used_at is None
    # The caller is kept only hashed.
    tenant_id = phone.world.tenant_a.pk
    assert row.end_user == "phone:" + end_user_hash(tenant_id=tenant_id, end_user=CALLER)
    assert CALLER not in row.end_user and token not in row.hashed_token
    # Nothing of the auth token leaks into the answer.
    assert AUTH_TOKEN_A not in response.content.decode()


def test_behind_a_tls_proxy_the_https_url_is_signed_and_the_stream_is_wss(client, phone):
    params = call_params()
    headers = signed_headers(params, url="https://testserver/twilio/voice")
    headers["X-Forwarded-Proto"] = "https"
    response = post_call(client, params, headers)
    assert response.status_code == 200
    stream = ET.fromstring(response.content).find("./Connect/Stream")
    assert stream.attrib["url"] == "wss://testserver/twilio/stream/"
    # The same request signed for http (what the server sees without the proxy) is refused.
    headers = signed_headers(params)
    headers["X-Forwarded-Proto"] = "https"
    assert post_call(client, params, headers).status_code == 403


def test_the_url_with_its_default_port_is_accepted(client, phone):
    params = call_params()
    headers = signed_headers(params, url="http://testserver:80/twilio/voice")
    assert post_call(client, params, headers).status_code == 200


@pytest.mark.parametrize(
    "forge",
    ["no-signature", "garbage", "other-tenants-token", "tampered-param", "other-url"],
)
def test_a_bad_signature_is_refused_and_nothing_is_recorded(client, phone, forge):
    params = call_params()
    if forge == "no-signature":
        headers = {}
    elif forge == "garbage":
        headers = {"X-Twilio-Signature": "c2lnbmF0dXJl"}
    elif forge == "other-tenants-token":
        headers = signed_headers(params, auth_token=AUTH_TOKEN_B)
    elif forge == "tampered-param":
        headers = signed_headers(params)
        params = {**params, "From": "+15005550006"}
    else:
        headers = signed_headers(params, url="http://testserver/elsewhere")
    response = post_call(client, params, headers)
    assert response.status_code == 403
    assert response.content == b"Invalid Twilio signature."
    nothing_recorded()


@pytest.mark.parametrize("to", ["+14155550142", "not-a-number", "", "sip:agent@example.com"])
def test_unknown_numbers_get_the_same_refusal(client, phone, to):
    params = call_params(to=to)
    # Signed with a real tenant's token: a known key does not open an unknown number.
    response = post_call(client, params, signed_headers(params))
    assert response.status_code == 404
    assert response.content.decode() == REJECTION
    nothing_recorded()


def test_a_removed_number_is_unknown(client, phone):
    from agents.telephony_views import phone_number_delete

    phone_number_delete(phone_number=phone.number, actor=phone.world.owner_a)
    params = call_params()
    response = post_call(client, params, signed_headers(params))
    assert response.status_code == 404
    assert response.content.decode() == REJECTION
    nothing_recorded()


def test_each_number_routes_to_its_own_tenant(client, phone):
    params = call_params(to=NUMBER_B)
    # B's number with A's key: refused; with B's key: B's agent.
    assert post_call(client, params, signed_headers(params)).status_code == 403
    nothing_recorded()
    response = post_call(client, params, signed_headers(params, auth_token=AUTH_TOKEN_B))
    assert response.status_code == 200
    with scopes_disabled():
        (row,) = ClientToken.objects.all()
    assert (row.tenant_id, row.agent_id) == (phone.world.tenant_b.pk, phone.other_agent.pk)


@pytest.mark.parametrize("why", ["suspended", "concurrency", "archived-agent"])
def test_a_tenant_that_cannot_take_calls_says_so_and_hangs_up(client, phone, why):
    tenant = phone.world.tenant_a
    if why == "suspended":
        Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)
    elif why == "concurrency":
        Tenant.objects.filter(pk=tenant.pk).update(max_concurrent_sessions=0)
    else:
        with tenant_scope(tenant):
            Agent.objects.filter(pk=phone.agent.pk).update(status=Agent.Status.ARCHIVED)
    params = call_params()
    response = post_call(client, params, signed_headers(params))
    assert response.status_code == 200  # Twilio plays only a 2xx answer
    assert response.content.decode() == UNAVAILABLE
    nothing_recorded()


def test_only_post(client, phone):
    assert client.get("/twilio/voice", call_params()).status_code == 405
    nothing_recorded()


def test_the_webhook_needs_no_csrf_token(phone):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    params = call_params()
    assert post_call(client, params, signed_headers(params)).status_code == 200


def test_numbers_are_unique_across_tenants(phone):
    from agents.telephony_views import phone_number_create
    from tenants.services import ServiceError

    with pytest.raises(ServiceError, match="already configured"):
        phone_number_create(
            tenant=phone.world.tenant_b, number=NUMBER_A, agent=phone.other_agent,
            auth_token=AUTH_TOKEN_B, actor=phone.world.owner_b,
        )  # fmt: skip
