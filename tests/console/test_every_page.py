"""Every console page (enumerated from the URL conf): a label for every field, a question
before every destructive action, and the tool latency in the transcript."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import resolve

from tests.console.pages import populate, tenant_page_urls

# Actions that lose something or cut someone off: their forms ask first (data-confirm).
DESTRUCTIVE = {
    "agent-archive", "agent-rollback", "session-end", "webhook-delete", "phone-number-remove",
    "api-key-revoke", "widget-key-revoke", "agent-tool-delete", "member-remove",
    "invitation-revoke",
}  # fmt: skip
UNLABELLED_TYPES = {"hidden", "submit", "button", "image", "reset"}
# Served as audio, never as a page (404 without a recording).
NOT_PAGES = {"session-recording"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.label_for: set[str] = set()
        self.fields: list[dict[str, str]] = []
        self.forms: list[dict[str, str]] = []
        self.in_label = 0

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        if tag == "label":
            self.in_label += 1
            self.label_for.add(attributes.get("for", ""))
        elif tag in ("input", "select", "textarea"):
            if attributes.get("type", "text") not in UNLABELLED_TYPES:
                self.fields.append({**attributes, "_tag": tag, "_in_label": str(self.in_label)})
        elif tag == "form":
            self.forms.append(attributes)

    def handle_endtag(self, tag):
        if tag == "label":
            self.in_label -= 1


@pytest.fixture
def pages(client, world):
    ids = populate("tenant-a")
    client.force_login(world.owner_a)
    shown = {}
    for name, url in tenant_page_urls("tenant-a", ids).items():
        if name in NOT_PAGES:
            continue
        response = client.get(url)
        if response.status_code == 405 or "text/html" not in response.get("Content-Type", ""):
            continue  # an action (POST only) or a download
        assert response.status_code == 200, (name, url, response.status_code)
        page = Page()
        page.feed(response.content.decode())
        shown[name] = (page, response.content.decode())
    return shown


def test_the_pages_cover_the_console(pages):
    expected = {
        "agent-edit", "session-detail", "webhook-detail", "member-list", "audit-log",
        "invoice-detail", "phone-number-list", "widget-key-detail", "data-retention",
    }  # fmt: skip
    assert expected <= set(pages)


def test_every_field_on_every_page_has_a_label(pages):
    unlabelled = []
    for name, (page, _) in pages.items():
        for field in page.fields:
            labelled = (
                field.get("id", "\0") in page.label_for
                or field.get("aria-label")
                or field.get("aria-labelledby")
                or field["_in_label"] != "0"
            )
            if not labelled:
                unlabelled.append((name, field["_tag"], field.get("name")))
    assert unlabelled == [], unlabelled


def test_every_destructive_form_asks_first(pages):
    seen, silent = set(), []
    for name, (page, _) in pages.items():
        for form in page.forms:
            if form.get("method", "").lower() != "post" or not form.get("action"):
                continue
            action = resolve(form["action"]).url_name
            if action in DESTRUCTIVE:
                seen.add(action)
                if not form.get("data-confirm"):
                    silent.append((name, action))
    assert silent == []
    assert seen == DESTRUCTIVE  # every kind was on some page, so each was checked


def test_the_transcript_shows_the_tool_latency(pages):
    _, content = pages["session-detail"]
    assert (
        '<span class="badge tool-latency" title="How long the tool took to answer">237 ms</span>'
        in content
    )
