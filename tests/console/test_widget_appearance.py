"""The widget's appearance, set in the console on the widget key and read by the widget."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.urls import reverse

from agents.models import Agent
from tenants.models import AuditEvent, WidgetKey
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import widget_key_create

ORIGIN = "https://shop.example"
GOOD = {
    "form": "appearance",
    "accent_colour": "#aa3300",
    "text_colour": "#ffffee",
    "position": "top-left",
    "button_text": "Ask us",
    "language": "fr",
}


@pytest.fixture
def widget_key(world):
    cache.clear()
    with tenant_scope(world.tenant_a):
        agent = Agent.objects.create(tenant=world.tenant_a, name="Shop", provider="local")
    return widget_key_create(
        tenant=world.tenant_a, name="shop", allowed_origins=[ORIGIN], agent=agent
    )


def detail_url(widget_key):
    return reverse("widget-key-detail", args=["tenant-a", widget_key.pk])


def stored(widget_key) -> dict:
    with scopes_disabled():
        return WidgetKey.objects.get(pk=widget_key.pk).appearance()


def test_the_console_saves_the_appearance_and_audits_each_change(client, world, widget_key):
    client.force_login(world.owner_a)
    page = client.get(detail_url(widget_key)).content.decode()
    assert 'data-preview="accent_colour"' in page and "widget-preview.js" in page
    response = client.post(detail_url(widget_key), GOOD)
    assert response.status_code == 302
    assert stored(widget_key) == {k: v for k, v in GOOD.items() if k != "form"}
    with scopes_disabled():
        event = AuditEvent.objects.get(action="widget_key.appearance_changed")
    assert event.changes["position"] == {"from": "bottom-right", "to": "top-left"}
    assert event.changes["language"] == {"from": "en", "to": "fr"}
    assert "button_text" in event.changes and "name" not in event.changes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("accent_colour", "red"),
        ("text_colour", "#fff"),
        ("position", "middle"),
        ("button_text", "x" * 25),
        ("language", "xx"),
    ],
)
def test_bad_values_are_form_errors_and_change_nothing(client, world, widget_key, field, value):
    client.force_login(world.owner_a)
    response = client.post(detail_url(widget_key), {**GOOD, field: value})
    assert response.status_code == 200
    assert response.context["appearance_form"].errors[field]
    assert stored(widget_key)["position"] == "bottom-right"
    with scopes_disabled():
        assert not AuditEvent.objects.filter(action="widget_key.appearance_changed").exists()


def test_a_viewer_cannot_change_the_appearance(client, world, widget_key):
    client.force_login(world.member_a)
    assert client.get(detail_url(widget_key)).status_code == 200
    assert client.post(detail_url(widget_key), GOOD).status_code == 403
    assert stored(widget_key)["language"] == "en"


def test_the_widget_reads_its_appearance_from_an_allowed_origin_only(client, world, widget_key):
    client.force_login(world.owner_a)
    client.post(detail_url(widget_key), GOOD)
    client.logout()
    url = f"/widget/appearance?key={widget_key.key}"
    response = client.get(url, headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response.json()["appearance"]["accent_colour"] == "#aa3300"
    refused = client.get(url, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert "appearance" not in refused.json()
    unknown = client.get("/widget/appearance?key=vp_pk_nope", headers={"Origin": ORIGIN})
    assert unknown.status_code == 403
    assert client.get("/widget/appearance", headers={"Origin": ORIGIN}).status_code == 400
    # No Origin: a same-origin GET (browsers omit it there): the platform's own origin counts.
    assert client.get(url).status_code == 403  # http://testserver is not allowed
    with scopes_disabled():
        WidgetKey.objects.filter(pk=widget_key.pk).update(
            allowed_origins=[ORIGIN, "http://testserver"]
        )
    assert client.get(url).json()["appearance"]["language"] == "fr"


def test_the_session_answer_carries_the_appearance(client, world, widget_key):
    with scopes_disabled():
        WidgetKey.objects.filter(pk=widget_key.pk).update(language="de", position="top-right")
    response = client.post(
        "/widget/session", {"key": widget_key.key}, content_type="application/json",
        headers={"Origin": ORIGIN},
    )  # fmt: skip
    assert response.status_code == 201
    assert response.json()["appearance"]["language"] == "de"
    assert response.json()["appearance"]["position"] == "top-right"
