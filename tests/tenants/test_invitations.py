"""Invitation tokens never travel in a URL that reaches a log (issue 13 item 9).

The link carries the token in its fragment (``/invitations/#vp_inv_…``), which browsers never
send; the page's script posts it in a CSRF-protected form and the session keeps only its hash.
The old path form (``/invitations/vp_inv_…/``) is refused without a look-up. A log filter masks
any token that still slips into a log line. The last test runs the whole flow in Chromium
against each real server process and reads its access log.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tenants import services
from tenants.models import Invitation, Membership, Role
from tenants.scoping import tenant_scope
from tenants.views import PENDING_INVITATION_SESSION_KEY
from tests.servers import ACCESS_LOG_LINE, SERVERS, Platform, base_environ
from tests.waiting import until_sync
from voiceplatform.logging import RedactSecretsFilter, redact


def invite(world, *, email="new@example.com", role=Role.FINANCE) -> str:
    _, raw = services.invitation_create(
        tenant=world.tenant_a, email=email, role=role, actor=world.owner_a
    )
    return raw


def pending(world) -> list[str]:
    with tenant_scope(world.tenant_a):
        return list(
            Invitation.objects.filter(accepted_at__isnull=True).values_list("email", flat=True)
        )


def test_the_members_page_puts_the_token_in_the_fragment(client, world):
    client.force_login(world.owner_a)
    response = client.post(
        reverse("member-list", args=["tenant-a"]), {"email": "new@example.com", "role": "viewer"}
    )
    link = response.context["invitation_link"]
    base, token = link.split("#")
    assert base == "http://testserver/invitations/"
    assert token.startswith("vp_inv_") and len(token) > 30
    assert link.encode() in response.content


def test_the_old_path_form_is_refused_without_a_look_up_or_a_log_line(
    client, world, caplog, django_assert_num_queries
):
    raw = invite(world)
    with caplog.at_level(logging.INFO), django_assert_num_queries(0):
        response = client.get(f"/invitations/{raw}/")
    assert response.status_code == 410
    assert b"no longer accepted" in response.content
    assert raw not in caplog.text
    assert [r for r in caplog.records if r.name == "django.request"] == []
    # Without the trailing slash, or with more below it: the same answer.
    assert client.get(f"/invitations/{raw}").status_code == 410
    assert client.post(f"/invitations/{raw}/", {"password": "a-long-password-1"}).status_code == 410
    assert pending(world) == ["new@example.com"]
    assert not get_user_model().objects.filter(username="new@example.com").exists()


def test_a_new_member_joins_with_the_token_in_a_post_body(client, world):
    raw = invite(world)
    page = client.get("/invitations/")
    assert page.status_code == 200
    assert b'id="invitation-token-form"' in page.content
    assert b"console/invitation.js" in page.content

    response = client.post("/invitations/", {"token": raw})
    assert response.status_code == 302 and response["Location"] == "/invitations/"
    # The session holds the hash, never the token.
    assert client.session[PENDING_INVITATION_SESSION_KEY] == services.invitation_token_hash(raw)
    assert raw not in str(dict(client.session.items()))

    page = client.get("/invitations/")
    assert b"Join Tenant A" in page.content and b"Finance" in page.content
    response = client.post("/invitations/", {"password": "a-long-password-1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("tenant-dashboard", args=["tenant-a"])
    with tenant_scope(world.tenant_a):
        assert Membership.objects.get(user__username="new@example.com").role == Role.FINANCE
    assert PENDING_INVITATION_SESSION_KEY not in client.session
    assert pending(world) == []
    # Used once: the same token is refused now.
    assert client.post("/invitations/", {"token": raw}).status_code == 404


def test_an_unknown_token_is_refused_and_nothing_is_kept(client, world):
    invite(world)
    response = client.post("/invitations/", {"token": "vp_inv_" + "x" * 32})
    assert response.status_code == 404
    assert b"Invitation not found" in response.content
    assert PENDING_INVITATION_SESSION_KEY not in client.session
    assert pending(world) == ["new@example.com"]


def test_an_existing_user_logs_in_and_the_invitation_waits_in_the_session(client, world):
    raw = invite(world, email=world.owner_b.username, role=Role.VIEWER)
    client.post("/invitations/", {"token": raw})
    page = client.get("/invitations/")
    assert b"You already have a login" in page.content
    assert b"/login/?next=/invitations/" in page.content
    response = client.post(
        "/login/?next=/invitations/",
        {"username": world.owner_b.username, "password": world.password},
    )
    assert response.status_code == 302 and response["Location"] == "/invitations/"
    page = client.get("/invitations/")
    assert b"Join as owner-b@example.com" in page.content
    client.post("/invitations/")
    with tenant_scope(world.tenant_a):
        assert Membership.objects.get(user=world.owner_b).role == Role.VIEWER


# --- the log filter -----------------------------------------------------------------------

TOKEN = "vp_inv_Ab3-dE_fGhIjKlMnOpQrStUvWxYz0123456789"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"GET /invitations/{TOKEN}/", "GET /invitations/vp_inv_[redacted]/"),
        (f"Not Found: /x?token={TOKEN}&a=1", "Not Found: /x?token=vp_inv_[redacted]&a=1"),
        (f"link={TOKEN}", "link=vp_inv_[redacted]"),
        (f"prefix_{TOKEN} end", "prefix_vp_inv_[redacted] end"),
        (f'"{TOKEN}"', '"vp_inv_[redacted]"'),
        ("GET /reset/MQ/cz6b1c-9a0c8f2b3e4d5a6b7c8d9e0f1a2b3c4d/", "GET /reset/MQ/[redacted]/"),
        ("GET /reset/MQ/set-password/", "GET /reset/MQ/set-password/"),
        ("sk-proj-abcdef123456 and whsec_abcdefghijkl", "sk-[redacted] and whsec_[redacted]"),
        ("task-1234567 stays", "task-1234567 stays"),
    ],
)
def test_redact_masks_tokens_anywhere_in_a_line(line, expected):
    assert redact(line) == expected


def test_the_filter_masks_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("Not Found: %s", f"/invitations/{TOKEN}/")
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = stream.getvalue()
    assert TOKEN not in output
    assert "Not Found: /invitations/vp_inv_[redacted]/" in output
    assert "ValueError: bad token vp_inv_[redacted]" in output


def test_every_configured_handler_of_djangos_loggers_redacts():
    """Django's default 'django' handlers print without the filter (when DEBUG): the settings
    route its loggers through the redacting handler instead."""
    for name in ("django", "django.request", "django.server", ""):
        logger = logging.getLogger(name)
        while logger is not None:
            for handler in logger.handlers:
                if type(handler).__module__.startswith("_pytest"):  # pytest's capture
                    continue
                assert any(isinstance(f, RedactSecretsFilter) for f in handler.filters), (
                    name,
                    handler,
                )
            logger = logger.parent if logger.propagate else None


# --- the whole flow in Chromium, against each server -------------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize("server", SERVERS)
def test_the_token_never_reaches_the_access_log(tmp_path, server):
    from tests.browser.conftest import require_browser, start_browser

    chromium = require_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    platform = Platform(base_environ(tmp_path, PYTHONUNBUFFERED="1"), tmp_path, server=server)
    driver = None
    try:
        raw = platform.shell(
            "from tenants import services; from tenants.models import Tenant\n"
            "tenant = Tenant.objects.get(slug='demo')\n"
            "print(services.invitation_create(tenant=tenant, email='joiner@example.com', "
            "role='admin', actor=None)[1])"
        ).splitlines()[-1]
        assert raw.startswith("vp_inv_")
        profile = tmp_path / "profile"
        profile.mkdir()
        driver = start_browser(chromium, Path("/dev/null"), profile, microphone=False)
        driver.get(f"{platform.http_url}/invitations/#{raw}")
        WebDriverWait(driver, 15).until(lambda d: "Join " in d.page_source)
        assert driver.current_url == f"{platform.http_url}/invitations/"  # fragment wiped
        driver.find_element(By.ID, "id_password").send_keys("a-long-password-1")
        driver.find_element(By.CSS_SELECTOR, "form button.primary").click()
        WebDriverWait(driver, 15).until(lambda d: d.current_url.endswith("/t/demo/"))
        assert "Welcome to" in driver.page_source
        role = platform.shell(
            "from tenants.scoping import scopes_disabled; from tenants.models import Membership\n"
            "with scopes_disabled(): "
            "print(Membership.objects.get(user__username='joiner@example.com').role)"
        ).splitlines()[-1]
        assert role == "admin"

        def access_log() -> str:
            return platform.log_path.read_text()

        def requests() -> list[tuple[str, str]]:
            return [(m["method"], m["path"]) for m in ACCESS_LOG_LINE.finditer(access_log())]

        # The server logged the flow's requests (so its access log is on and was read) ...
        until_sync(
            lambda: ("GET", "/t/demo/") in requests(), "the dashboard request in the access log"
        )
        assert {("POST", "/invitations/"), ("GET", "/invitations/")} <= set(requests())
        log = access_log()
        # ... and never the token, nor its random part.
        assert raw not in log
        assert raw.removeprefix("vp_inv_") not in log
    finally:
        if driver is not None:
            driver.quit()
        platform.stop()
