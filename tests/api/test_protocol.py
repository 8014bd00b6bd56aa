"""What every REST API request shares: keys and scopes, the error shape, idempotency, rates."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent
from tenants import idempotency, services
from tenants.models import ApiKey, IdempotencyRecord, WidgetKey
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.tasks import idempotency_records_purge
from tests.api.conftest import ApiClient, error_of

pytestmark = pytest.mark.django_db


def agent_count(tenant) -> int:
    with tenant_scope(tenant):
        return Agent.objects.count()


# --- authentication and scopes ------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer vp_live_unknown", "Basic dXNlcjpwYXNz", "Token x"]
)
def test_no_valid_key_is_401(world, authorization):
    client = ApiClient(None)
    headers = {"Authorization": authorization} if authorization else {}
    answer = client.get("/api/v1/agents", headers=headers)
    assert answer.status == 401
    error = error_of(answer)
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_is_401(world, agent_a):
    api_key, raw_key = services.api_key_issue(tenant=world.tenant_a, name="old")
    services.api_key_revoke(api_key=api_key)
    assert ApiClient(raw_key).get("/api/v1/agents").status == 401


def test_scopes_decide_what_a_key_may_do(world, agent_a):
    _, read_only = services.api_key_issue(tenant=world.tenant_a, name="r", scopes=["read"])
    reader = ApiClient(read_only)
    assert reader.get("/api/v1/agents").status == 200
    refused = reader.post("/api/v1/agents", {"name": "Nope"})
    assert refused.status == 403
    error = error_of(refused)
    assert (error["type"], error["code"]) == ("permission_error", "insufficient_scope")
    assert "write" in error["message"]
    assert agent_count(world.tenant_a) == 1
    _, realtime_only = services.api_key_issue(tenant=world.tenant_a, name="rt", scopes=["realtime"])
    assert error_of(ApiClient(realtime_only).get("/api/v1/sessions"))["code"] == (
        "insufficient_scope"
    )
    _, write_only = services.api_key_issue(tenant=world.tenant_a, name="w", scopes=["write"])
    writer = ApiClient(write_only)
    assert writer.post("/api/v1/agents", {"name": "Yes"}).status == 201
    assert writer.get("/api/v1/agents").status == 403


def test_client_secrets_need_the_realtime_scope_and_share_the_error_shape(world, agent_a):
    _, read_only = services.api_key_issue(tenant=world.tenant_a, name="r", scopes=["read"])
    path = reverse("client-secrets") + f"?agent={agent_a.pk}"
    refused = ApiClient(read_only).post(path, {})
    assert (refused.status, error_of(refused)["code"]) == (403, "insufficient_scope")
    _, realtime = services.api_key_issue(tenant=world.tenant_a, name="rt", scopes=["realtime"])
    minted = ApiClient(realtime).post(path, {})
    assert minted.status == 200 and minted.body["value"].startswith("vp_ek_")
    bad = ApiClient(realtime).post(path, {"expires_after": {"seconds": "soon"}})
    assert (bad.status, error_of(bad)["param"]) == (400, "expires_after.seconds")


def test_existing_keys_got_every_scope_and_issue_validates_scopes(world):
    api_key, _ = services.api_key_issue(tenant=world.tenant_a, name="all")
    assert api_key.scopes == ["realtime", "read", "write"]
    with pytest.raises(services.ServiceError):
        services.api_key_issue(tenant=world.tenant_a, name="none", scopes=[])
    with pytest.raises(services.ServiceError):
        services.api_key_issue(tenant=world.tenant_a, name="odd", scopes=["admin"])


def test_console_key_form_issues_the_chosen_scopes(client, world):
    client.force_login(world.owner_a)
    url = reverse("api-key-list", args=[world.tenant_a.slug])
    page = client.get(url)
    assert b'name="scopes"' in page.content
    client.post(url, {"name": "Reporting", "scopes": ["read"]})
    with tenant_scope(world.tenant_a):
        assert ApiKey.objects.get(name="Reporting").scopes == ["read"]
    client.post(url, {"name": "Nothing"})  # no scope chosen: a form error, no key
    with tenant_scope(world.tenant_a):
        assert not ApiKey.objects.filter(name="Nothing").exists()


# --- the error shape ----------------------------------------------------------------------


def test_unknown_paths_and_methods(api_a, agent_a):
    unknown = api_a.get("/api/v1/nothing/here")
    assert (unknown.status, error_of(unknown)["code"]) == (404, "unknown_path")
    wrong = api_a.call("DELETE", "/api/v1/agents")
    assert wrong.status == 405
    assert error_of(wrong)["code"] == "method_not_allowed"
    assert set(wrong.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    missing = api_a.get("/api/v1/agents/999999")
    assert (missing.status, error_of(missing)["type"]) == (404, "not_found_error")
    not_int = api_a.get("/api/v1/agents/abc")
    assert not_int.status in (400, 404)
    error_of(not_int)


def test_bodies_must_be_json(api_a, world):
    form = api_a.post(
        "/api/v1/agents", raw=b"name=x", content_type="application/x-www-form-urlencoded"
    )
    assert (form.status, error_of(form)["code"]) == (415, "unsupported_media_type")
    broken = api_a.post("/api/v1/agents", raw=b'{"name": ', content_type="application/json")
    assert (broken.status, error_of(broken)["code"]) == (400, "invalid_json")
    array = api_a.post("/api/v1/agents", raw=b"[1, 2]", content_type="application/json")
    assert array.status == 400
    error_of(array)
    assert agent_count(world.tenant_a) == 0


def test_a_body_over_the_upload_limit_is_413(api_a, world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    answer = api_a.post("/api/v1/agents", {"name": "x", "instructions": "y" * 2000})
    assert (answer.status, error_of(answer)["code"]) == (413, "request_too_large")
    assert agent_count(world.tenant_a) == 0


def test_an_unexpected_failure_is_a_json_500(api_a, agent_a, monkeypatch):
    def broken(agent):
        raise RuntimeError("boom")

    monkeypatch.setattr("voiceplatform.api.agents.agent_out", broken)
    answer = api_a.get("/api/v1/agents")
    assert answer.status == 500
    error = error_of(answer)
    assert (error["type"], error["code"]) == ("api_error", "internal_error")
    assert "boom" not in answer.content.decode()


# --- idempotency --------------------------------------------------------------------------


def test_a_replayed_post_answers_the_same_and_creates_once(api_a, world):
    headers = {"Idempotency-Key": "create-sales-1"}
    first = api_a.post("/api/v1/agents", {"name": "Sales"}, headers=headers)
    again = api_a.post("/api/v1/agents", {"name": "Sales"}, headers=headers)
    assert first.status == again.status == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert agent_count(world.tenant_a) == 1
    other_key = api_a.post("/api/v1/agents", {"name": "Sales"}, headers={"Idempotency-Key": "2"})
    assert other_key.status == 201 and agent_count(world.tenant_a) == 2


def test_the_same_key_with_another_body_is_refused(api_a, world):
    headers = {"Idempotency-Key": "k1"}
    api_a.post("/api/v1/agents", {"name": "Sales"}, headers=headers)
    reused = api_a.post("/api/v1/agents", {"name": "Support"}, headers=headers)
    assert reused.status == 422
    error = error_of(reused)
    assert (error["code"], error["param"]) == ("idempotency_key_reused", "Idempotency-Key")
    elsewhere = api_a.post("/api/v1/widget_keys", {"name": "w"}, headers=headers)
    assert elsewhere.status == 422
    assert agent_count(world.tenant_a) == 1


def test_keys_are_per_api_key(world):
    _, first_raw = services.api_key_issue(tenant=world.tenant_a, name="one")
    _, second_raw = services.api_key_issue(tenant=world.tenant_a, name="two")
    headers = {"Idempotency-Key": "same"}
    assert ApiClient(first_raw).post("/api/v1/agents", {"name": "A"}, headers=headers).status == 201
    second = ApiClient(second_raw).post("/api/v1/agents", {"name": "A"}, headers=headers)
    assert second.status == 201 and "Idempotent-Replayed" not in second.headers
    assert agent_count(world.tenant_a) == 2


def test_a_request_still_running_is_409(api_a, world):
    with scopes_disabled():
        api_key = ApiKey.objects.get(tenant=world.tenant_a)
    body = json.dumps({"name": "Slow"}).encode()
    fingerprint = idempotency.request_fingerprint(
        method="POST", path="/api/v1/agents", query="", body=body
    )
    assert (
        idempotency.idempotency_begin(api_key=api_key, key="slow", fingerprint=fingerprint) is None
    )
    running = api_a.post("/api/v1/agents", raw=body, headers={"Idempotency-Key": "slow"})
    assert (running.status, error_of(running)["code"]) == (409, "idempotency_key_in_use")
    assert agent_count(world.tenant_a) == 0


def test_refusals_and_failures_are_not_stored(api_a, world, monkeypatch):
    headers = {"Idempotency-Key": "retry-me"}
    monkeypatch.setattr(
        "voiceplatform.api.agents.agent_create",
        lambda **kwargs: (_ for _ in ()).throw(RuntimeError("database away")),
    )
    failed = api_a.post("/api/v1/agents", {"name": "Sales"}, headers=headers)
    assert failed.status == 500
    monkeypatch.undo()
    retried = api_a.post("/api/v1/agents", {"name": "Sales"}, headers=headers)
    assert retried.status == 201 and "Idempotent-Replayed" not in retried.headers


def test_stored_answers_expire_after_24_hours(api_a, world):
    headers = {"Idempotency-Key": "old"}
    api_a.post("/api/v1/agents", {"name": "Sales"}, headers=headers)
    with scopes_disabled():
        assert IdempotencyRecord.objects.count() == 1
        IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotency_records_purge() == 1
    with scopes_disabled():
        assert IdempotencyRecord.objects.count() == 0
    again = api_a.post("/api/v1/agents", {"name": "Sales"}, headers=headers)
    assert again.status == 201 and agent_count(world.tenant_a) == 2


def test_an_empty_or_huge_idempotency_key_is_400(api_a):
    answer = api_a.post("/api/v1/agents", {"name": "x"}, headers={"Idempotency-Key": "k" * 300})
    assert (answer.status, error_of(answer)["param"]) == (400, "Idempotency-Key")


# --- rate limits --------------------------------------------------------------------------


def test_a_key_over_its_rate_gets_429_with_retry_after(api_a, world, settings):
    # Counted per key (this test's key is new), in fixed windows: an hour's window is not crossed
    # during the test.
    settings.VP_API_RATE = "3/h"
    statuses = [api_a.get("/api/v1/agents").status for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = api_a.get("/api/v1/agents")
    assert limited.status == 429
    error = error_of(limited)
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 3600
    _, other_raw = services.api_key_issue(tenant=world.tenant_a, name="other")
    assert ApiClient(other_raw).get("/api/v1/agents").status == 200  # per key


# --- widget keys --------------------------------------------------------------------------


def test_widget_keys_create_list_revoke(api_a, world, agent_a, agent_b):
    created = api_a.post(
        "/api/v1/widget_keys",
        {"name": "Shop", "allowed_origins": ["https://shop.example.com"], "agent": agent_a.pk},
    )
    assert created.status == 201, created.body
    key = created.body
    assert key["key"].startswith("vp_pk_") and key["agent"] == agent_a.pk and key["active"]
    assert [row["id"] for row in api_a.get("/api/v1/widget_keys").body["data"]] == [key["id"]]
    bad = api_a.post("/api/v1/widget_keys", {"name": "x", "allowed_origins": ["not an origin"]})
    assert (bad.status, error_of(bad)["param"]) == (400, "allowed_origins")
    foreign_agent = api_a.post(
        "/api/v1/widget_keys",
        {"name": "x", "allowed_origins": ["https://a.example"], "agent": agent_b.pk},
    )
    assert (foreign_agent.status, error_of(foreign_agent)["code"]) == (404, "agent_not_found")
    revoked = api_a.post(f"/api/v1/widget_keys/{key['id']}/revoke")
    assert revoked.status == 200 and revoked.body["active"] is False
    with tenant_scope(world.tenant_a):
        assert WidgetKey.objects.get(pk=key["id"]).revoked_at is not None
        assert WidgetKey.objects.count() == 1


def test_another_tenants_widget_key_is_404_and_stays_active(api_a, world, agent_b):
    theirs = services.widget_key_create(
        tenant=world.tenant_b, name="B", allowed_origins=["https://b.example"]
    )
    for answer in (api_a.get(f"/api/v1/widget_keys/{theirs.pk}"),
                   api_a.post(f"/api/v1/widget_keys/{theirs.pk}/revoke")):  # fmt: skip
        assert (answer.status, error_of(answer)["code"]) == (404, "widget_key_not_found")
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert api_a.get("/api/v1/widget_keys").body["data"] == []


# --- the reference ------------------------------------------------------------------------


def test_the_schema_and_an_offline_reference_page(client, world):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/sessions" in schema["paths"]
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["scheme"] == "bearer"
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "https://" not in html.split("<body", 1)[0]  # nothing from a CDN
    assert "script-src 'self'" in page["Content-Security-Policy"]


def test_an_unknown_query_parameter_is_400_naming_it(api_a):
    answer = api_a.get("/api/v1/sessions", query={"chanel": "phone"})
    assert answer.status == 400
    error = error_of(answer)
    assert (error["code"], error["param"]) == ("unknown_parameter", "chanel")
    assert "channel" in error["message"]


def test_client_secrets_take_an_idempotency_key_too(world, agent_a):
    _, raw = services.api_key_issue(tenant=world.tenant_a, name="rt", scopes=["realtime"])
    client = ApiClient(raw)
    path = reverse("client-secrets") + f"?agent={agent_a.pk}"
    headers = {"Idempotency-Key": "secret-1"}
    first = client.post(path, {}, headers=headers)
    again = client.post(path, {}, headers=headers)
    assert first.status == again.status == 200
    assert again.body["value"] == first.body["value"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post(path, {"expires_after": {"seconds": 60}}, headers=headers)
    assert (other.status, error_of(other)["code"]) == (422, "idempotency_key_reused")
