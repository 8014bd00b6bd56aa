"""Signing in (issue 13 item 10): throttling per address and per account (django-axes), for the
console and the admin; password reset by e-mail without user enumeration; the optional TOTP
second factor, which the admin requires too."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pyotp
import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tenants import crypto, services, totp
from tenants.auth import SECOND_FACTOR_PENDING_SESSION_KEY, client_ip_address
from tenants.models import TotpDevice
from tests.servers import ACCESS_LOG_LINE, SERVERS
from voiceplatform.logging import redact

LIMIT = 5


@pytest.fixture(autouse=True)
def _throttling(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = 0.25  # hours


def log_in(client: Client, username: str, password: str, *, address="127.0.0.1", next_url=""):
    url = "/login/" + (f"?next={next_url}" if next_url else "")
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def staff(db):
    user = services.user_get_or_create(email="staff@example.com", password="staff-pass-word-1")
    user.is_staff = user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    return user


# --- throttling ---------------------------------------------------------------------------


def test_wrong_passwords_lock_the_account_and_the_right_one_then_fails(client, world):
    for _ in range(LIMIT):
        response = log_in(client, "owner-a@example.com", "wrong-password")
    assert response.status_code == 429
    response = log_in(client, "owner-a@example.com", world.password)
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert b"locked after 5 failed attempts" in response.content
    assert not logged_in(client)
    assert client.get("/console/")["Location"].startswith("/login/")


def test_failures_from_one_address_lock_that_address_for_every_account(client, world):
    for index in range(LIMIT):
        log_in(client, f"nobody-{index}@example.com", "guess", address="203.0.113.7")
    response = log_in(client, "owner-a@example.com", world.password, address="203.0.113.7")
    assert response.status_code == 429
    assert not logged_in(client)
    # The account itself was never guessed at: from another address it logs in.
    response = log_in(Client(), "owner-a@example.com", world.password, address="198.51.100.1")
    assert response.status_code == 302


def test_failures_on_one_account_from_many_addresses_lock_the_account(client, world):
    for index in range(LIMIT):
        log_in(Client(), "owner-a@example.com", "guess", address=f"203.0.113.{index + 1}")
    response = log_in(client, "owner-a@example.com", world.password, address="198.51.100.9")
    assert response.status_code == 429
    assert not logged_in(client)
    # Another account from that same fresh address is not affected.
    response = log_in(Client(), "owner-b@example.com", world.password, address="198.51.100.9")
    assert response.status_code == 302


def test_a_forged_forwarded_for_header_does_not_give_a_fresh_address(client, world):
    for index in range(LIMIT):
        client.post(
            "/login/",
            {"username": f"nobody-{index}@example.com", "password": "guess"},
            REMOTE_ADDR="203.0.113.7",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{index}",
        )
    response = client.post(
        "/login/",
        {"username": "owner-a@example.com", "password": world.password},
        REMOTE_ADDR="203.0.113.7",
        HTTP_X_FORWARDED_FOR="192.0.2.200",
    )
    assert response.status_code == 429


def test_the_client_address_header_is_read_only_when_configured(rf, settings):
    request = rf.get("/", REMOTE_ADDR="10.0.0.5", HTTP_X_REAL_IP="203.0.113.9")
    request.META["HTTP_X_FORWARDED_FOR"] = "6.6.6.6, 203.0.113.9"
    settings.VP_LOGIN_CLIENT_IP_HEADER = ""
    assert client_ip_address(request) == "10.0.0.5"
    settings.VP_LOGIN_CLIENT_IP_HEADER = "X-Real-IP"
    assert client_ip_address(request) == "203.0.113.9"
    # A list: the last entry, the one the nearest proxy appended.
    settings.VP_LOGIN_CLIENT_IP_HEADER = "X-Forwarded-For"
    assert client_ip_address(request) == "203.0.113.9"


def test_the_lockout_ends_after_the_cool_off(client, world):
    for _ in range(LIMIT):
        log_in(client, "owner-a@example.com", "wrong-password")
    assert log_in(client, "owner-a@example.com", world.password).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = log_in(client, "owner-a@example.com", world.password)
    assert response.status_code == 302 and logged_in(client)


def test_the_admin_login_form_is_not_a_second_door(client, staff):
    page = client.get("/admin/login/?next=/admin/tenants/tenant/")
    assert page.status_code == 302
    assert page["Location"] == "/login/?next=%2Fadmin%2Ftenants%2Ftenant%2F"
    response = client.post(
        "/admin/login/", {"username": "staff@example.com", "password": "staff-pass-word-1"}
    )
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert not logged_in(client)
    assert client.get("/admin/").status_code == 302


def test_brute_force_on_the_admin_is_locked_out(client, staff):
    for _ in range(LIMIT):
        log_in(client, "staff@example.com", "wrong-password", next_url="/admin/")
    response = log_in(client, "staff@example.com", "staff-pass-word-1", next_url="/admin/")
    assert response.status_code == 429
    assert not logged_in(client)
    assert client.get("/admin/").status_code == 302  # still the login


def test_staff_reach_the_admin_through_the_console_login(client, staff):
    response = log_in(client, "staff@example.com", "staff-pass-word-1", next_url="/admin/")
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


# --- password reset -----------------------------------------------------------------------


def reset_link(message) -> tuple[str, str]:
    """The mailed link's path and fragment."""
    url = re.search(r"http://testserver(/\S*)", message.body).group(1)
    path, _, fragment = url.partition("#")
    return path, fragment


def test_password_reset_by_email_end_to_end(client, world):
    response = client.post("/password-reset/", {"email": "owner-a@example.com"})
    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["owner-a@example.com"]
    assert message.subject == "Your VoicePlatform password"
    path, fragment = reset_link(message)
    # The token is in the fragment, which browsers never send: no URL that reaches a log has it.
    assert path == "/reset/"
    uid, token = fragment.split("/")
    assert re.fullmatch(r"[0-9a-z]+-[0-9a-f]+", token)
    page = client.get(path)
    assert b'id="password-reset-link-form"' in page.content
    assert b"console/password-reset.js" in page.content

    # The page's script posts the fragment; Django's confirm view takes it from the session at
    # its token-less URL.
    response = client.post(path, {"link": fragment})
    assert response.status_code == 302
    assert response["Location"] == f"/reset/{uid}/set-password/"
    page = client.get(response["Location"])
    assert page.context["validlink"] is True
    response = client.post(
        f"/reset/{uid}/set-password/",
        {"new_password1": "a-brand-new-secret-9", "new_password2": "a-brand-new-secret-9"},
    )
    assert response.status_code == 302 and response["Location"] == "/reset/done/"
    assert not logged_in(client)  # no login without the normal door (second factor)

    assert log_in(Client(), "owner-a@example.com", world.password).status_code == 200  # old
    assert log_in(Client(), "owner-a@example.com", "a-brand-new-secret-9").status_code == 302
    # The link worked once.
    other = Client()
    response = other.post(path, {"link": fragment}, follow=True)
    assert response.context["validlink"] is False
    # Django's own link form (the token in the path) is not routed, and its log line is masked.
    assert redact(f"GET /reset/{uid}/{token}/") == f"GET /reset/{uid}/[redacted]/"
    assert other.get(f"/reset/{uid}/{token}/").status_code == 404


def test_a_forged_reset_link_sets_nothing(client, world):
    response = client.post("/reset/", {"link": "MQ/abc-0123456789abcdef"}, follow=True)
    assert response.context["validlink"] is False
    assert b"Link not valid" in response.content
    response = client.post("/reset/", {"link": "not a link"})
    assert response.status_code == 400
    assert b"not a password-reset link" in response.content


def test_password_reset_does_not_tell_who_has_a_login(client, world):
    known = client.post("/password-reset/", {"email": "owner-a@example.com"}, follow=True)
    unknown = client.post("/password-reset/", {"email": "nobody@example.com"}, follow=True)
    assert known.status_code == unknown.status_code == 200
    assert known.redirect_chain == unknown.redirect_chain == [("/password-reset/sent/", 302)]
    assert known.content == unknown.content
    assert [message.to for message in mail.outbox] == [["owner-a@example.com"]]


def test_the_login_page_links_to_the_reset(client):
    assert b'href="/password-reset/"' in client.get("/login/").content


# --- the second factor --------------------------------------------------------------------


def enrol(client: Client, user) -> str:
    """Turn the second factor on through the console; returns the secret."""
    page = client.get("/account/two-factor/")
    secret = page.context["secret"]
    assert page.context["uri"].startswith("otpauth://totp/VoicePlatform:")
    assert f"secret={secret}" in page.context["uri"]
    assert secret.encode() in page.content and b"<svg" in page.content
    response = client.post("/account/two-factor/", {"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 302
    return secret


def next_code(secret: str) -> str:
    """A code of the next 30 s step (the current one was used at enrolment: codes count once)."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def test_enrolment_needs_a_valid_code_and_stores_the_secret_encrypted(client, world):
    client.force_login(world.member_a)
    page = client.get("/account/two-factor/")
    secret = page.context["secret"]
    response = client.post("/account/two-factor/", {"code": "000000"})
    assert response.status_code == 200 and b"not valid" in response.content
    assert totp.device_confirmed(world.member_a) is None
    # A reload shows the same secret until confirmed.
    assert client.get("/account/two-factor/").context["secret"] == secret
    client.post("/account/two-factor/", {"code": pyotp.TOTP(secret).now()})
    device = TotpDevice.objects.get(user=world.member_a)
    assert device.confirmed_at is not None
    assert secret not in device.encrypted_secret
    assert crypto.decrypt(device.encrypted_secret) == secret
    page = client.get("/account/two-factor/")
    assert page.context["enabled"] is True and secret.encode() not in page.content


def test_login_asks_for_the_code_and_only_the_code_logs_in(client, world):
    client.force_login(world.member_a)
    secret = enrol(client, world.member_a)
    client.logout()

    response = log_in(client, "member-a@example.com", world.password, next_url="/console/")
    assert response.status_code == 302 and response["Location"] == "/login/code/"
    assert not logged_in(client)
    assert client.get("/t/tenant-a/")["Location"].startswith("/login/")
    page = client.get("/login/code/")
    assert page.status_code == 200 and b"Enter your code" in page.content

    response = client.post("/login/code/", {"code": "123456"})
    assert response.status_code == 200 and b"not valid" in response.content
    assert not logged_in(client)
    # The code used at enrolment is spent: a replay is refused.
    replay = pyotp.TOTP(secret).now()
    assert client.post("/login/code/", {"code": replay}).status_code == 200
    assert not logged_in(client)

    response = client.post("/login/code/", {"code": next_code(secret)})
    assert response.status_code == 302 and response["Location"] == "/console/"
    assert logged_in(client)
    assert SECOND_FACTOR_PENDING_SESSION_KEY not in client.session
    assert client.get("/t/tenant-a/").status_code == 200


def test_wrong_codes_are_throttled_like_passwords(client, world):
    client.force_login(world.member_a)
    secret = enrol(client, world.member_a)
    client.logout()
    log_in(client, "member-a@example.com", world.password)
    for _ in range(LIMIT):
        response = client.post("/login/code/", {"code": "000000"})
    assert response.status_code == 429
    response = client.post("/login/code/", {"code": next_code(secret)})
    assert response.status_code == 429
    assert not logged_in(client)


def test_the_code_step_expires(client, world, settings):
    client.force_login(world.member_a)
    secret = enrol(client, world.member_a)
    client.logout()
    log_in(client, "member-a@example.com", world.password)
    session = client.session
    session[SECOND_FACTOR_PENDING_SESSION_KEY]["started"] -= (
        settings.VP_LOGIN_CODE_TIMEOUT_SECONDS + 1
    )
    session.save()
    response = client.post("/login/code/", {"code": next_code(secret)})
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert not logged_in(client)


def test_the_admin_requires_the_code_of_an_enrolled_staff_member(client, staff):
    client.force_login(staff)
    secret = enrol(client, staff)
    client.logout()
    response = log_in(client, "staff@example.com", "staff-pass-word-1", next_url="/admin/")
    assert response["Location"] == "/login/code/"
    assert not logged_in(client)
    assert client.get("/admin/").status_code == 302
    response = client.post("/login/code/", {"code": next_code(secret)})
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_turning_it_off_needs_a_code(client, world):
    client.force_login(world.member_a)
    secret = enrol(client, world.member_a)
    response = client.post("/account/two-factor/", {"code": "000000"})
    assert response.status_code == 200
    assert totp.device_confirmed(world.member_a) is not None
    client.post("/account/two-factor/", {"code": next_code(secret)})
    assert totp.device_confirmed(world.member_a) is None


def test_staff_reset_a_lost_second_factor_with_a_command(client, world, capsys):
    client.force_login(world.member_a)
    enrol(client, world.member_a)
    client.logout()
    call_command("second_factor_reset", "member-a@example.com")
    assert "Second factor of member-a@example.com removed." in capsys.readouterr().out
    assert not TotpDevice.objects.filter(user=world.member_a).exists()
    response = log_in(client, "member-a@example.com", world.password)
    assert response.status_code == 302 and logged_in(client)


def test_secrets_rotate_under_a_new_first_key(client, world, settings):
    client.force_login(world.member_a)
    secret = enrol(client, world.member_a)
    old_key = settings.CREDENTIAL_KEYS[0]
    settings.CREDENTIAL_KEYS = [crypto.generate_key(), old_key]
    call_command("rotate_credentials")  # the operator's one command covers them
    settings.CREDENTIAL_KEYS = settings.CREDENTIAL_KEYS[:1]
    device = TotpDevice.objects.get(user=world.member_a)
    assert crypto.decrypt(device.encrypted_secret) == secret
    assert get_user_model().objects.filter(pk=world.member_a.pk).exists()


@pytest.mark.django_db(transaction=True)
async def test_the_lockout_holds_under_asgi(async_client, settings):
    """Daphne runs the ASGI handler, where axes' middleware takes its async path."""
    from asgiref.sync import sync_to_async

    await sync_to_async(services.user_get_or_create)(
        email="async@example.com", password="async-pass-word-1"
    )
    for _ in range(LIMIT):
        await async_client.post("/login/", {"username": "async@example.com", "password": "x"})
    response = await async_client.post(
        "/login/", {"username": "async@example.com", "password": "async-pass-word-1"}
    )
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content


@pytest.mark.browser
@pytest.mark.parametrize("server", SERVERS)
def test_the_reset_token_never_reaches_the_access_log(tmp_path, server):
    """The whole reset in Chromium against each server (embedded: the mail is printed to the
    same output, which is where the test reads the link from; only the access log must not have
    it)."""
    from pathlib import Path

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser.conftest import require_browser, start_browser
    from tests.servers import Platform, base_environ
    from tests.waiting import until_sync

    chromium = require_browser()
    platform = Platform(base_environ(tmp_path, PYTHONUNBUFFERED="1"), tmp_path, server=server)
    driver = None
    try:
        profile = tmp_path / "profile"
        profile.mkdir()
        driver = start_browser(chromium, Path("/dev/null"), profile, microphone=False)
        driver.get(f"{platform.http_url}/password-reset/")
        driver.find_element(By.ID, "id_email").send_keys(platform.seed["username"])
        driver.find_element(By.CSS_SELECTOR, "form button.primary").click()
        WebDriverWait(driver, 15).until(lambda d: "Check your e-mail" in d.page_source)
        link_pattern = re.compile(r"(http://\S+/reset/)#(\S+)/(\S+)")
        until_sync(lambda: link_pattern.search(platform.log_path.read_text()), "the mail")
        base, uid, token = link_pattern.search(platform.log_path.read_text()).groups()

        driver.get(f"{base}#{uid}/{token}")
        WebDriverWait(driver, 15).until(lambda d: "Set a new password" in d.page_source)
        assert driver.current_url == f"{platform.http_url}/reset/{uid}/set-password/"
        driver.find_element(By.ID, "id_new_password1").send_keys("a-brand-new-secret-9")
        driver.find_element(By.ID, "id_new_password2").send_keys("a-brand-new-secret-9")
        driver.find_element(By.CSS_SELECTOR, "form button.primary").click()
        WebDriverWait(driver, 15).until(lambda d: "Password set" in d.page_source)

        def access_log_paths() -> list[str]:
            text = platform.log_path.read_text()
            return [match["path"] for match in ACCESS_LOG_LINE.finditer(text)]

        until_sync(lambda: "/reset/done/" in access_log_paths(), "the last request logged")
        paths = access_log_paths()
        assert "/reset/" in paths and f"/reset/{uid}/set-password/" in paths
        assert not [path for path in paths if token in path]
    finally:
        if driver is not None:
            driver.quit()
        platform.stop()


def test_deploy_checks_name_throttling_off_and_mail_that_is_never_sent(settings):
    from tenants.checks import check_login_throttling, check_password_reset_mail

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "no-reply@voice.example.com"
    assert check_login_throttling() == [] and check_password_reset_mail() == []
    settings.AXES_ENABLED = False
    assert [w.id for w in check_login_throttling()] == ["tenants.W001"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "VoicePlatform <no-reply@localhost>"
    assert [w.id for w in check_password_reset_mail()] == ["tenants.W002", "tenants.W003"]


def test_behind_the_proxy_the_server_gives_the_forwarded_client_address(tmp_path):
    """Production's server runs with --proxy-headers (Procfile) behind nginx, which overwrites
    X-Forwarded-For with the client's address: REMOTE_ADDR is then that address, and it is what
    the lockout counts (one client locked, another behind the same proxy not)."""
    import urllib.error
    import urllib.parse
    import urllib.request
    from http.cookiejar import CookieJar

    from tests import servers

    environ = servers.base_environ(tmp_path, VP_LOGIN_FAILURE_LIMIT=str(LIMIT))
    platform = servers.Platform(environ, tmp_path, proxy_headers=True)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def attempt(username: str, password: str, client_address: str) -> int:
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar()), NoRedirect()
        )
        page = opener.open(f"{platform.http_url}/login/", timeout=10).read().decode()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        form = {"username": username, "password": password}
        request = urllib.request.Request(
            f"{platform.http_url}/login/",
            data=urllib.parse.urlencode({**form, "csrfmiddlewaretoken": csrf}).encode(),
            headers={"X-Forwarded-For": client_address},
        )
        try:
            return opener.open(request, timeout=10).status
        except urllib.error.HTTPError as error:
            return error.code

    try:
        # Guesses at other accounts from one client lock that client's address ...
        statuses = [attempt(f"nobody-{n}", "guess", "203.0.113.7") for n in range(LIMIT)]
        assert statuses == [200] * (LIMIT - 1) + [429]
        username, password = platform.seed["username"], platform.seed["password"]
        assert attempt(username, password, "203.0.113.7") == 429
        # ... and not another client's, though both reach Daphne from the same proxy address.
        assert attempt(username, password, "198.51.100.1") == 302
    finally:
        platform.stop()


def test_reset_requests_are_limited_per_address_and_per_email(world, settings):
    """Nobody can mail-bomb a member: past the rate, the same "sent" page, and no mail."""
    from django.core.cache import cache

    cache.clear()
    settings.VP_PASSWORD_RESET_RATE = "2/h"
    answers = [
        Client(REMOTE_ADDR=f"198.51.100.{n}").post(
            "/password-reset/", {"email": "owner-a@example.com"}
        )
        for n in range(4)
    ]
    assert {(a.status_code, a["Location"]) for a in answers} == {(302, "/password-reset/sent/")}
    assert len(mail.outbox) == 2  # per e-mail address, across addresses
    one = Client(REMOTE_ADDR="203.0.113.5")
    for email in ("a@example.com", "b@example.com", "member-a@example.com"):
        one.post("/password-reset/", {"email": email})
    assert [m.to for m in mail.outbox[2:]] == []  # the third from one address sends nothing
