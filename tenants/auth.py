"""Signing in: throttling, the second factor, and one door for the console and the admin.

* Throttling is django-axes (``LoginThrottleBackend`` first in ``AUTHENTICATION_BACKENDS``):
  failed passwords and failed second-factor codes count per client address and per account;
  past ``VP_LOGIN_FAILURE_LIMIT`` the address or account is locked (429, the
  ``registration/locked_out.html`` page) for ``VP_LOGIN_COOLOFF_MINUTES``.
* A member who enrolled a second factor (``tenants.totp``) is not logged in by the password:
  ``LoginView`` keeps "password checked" in the session and asks for the code, and only the code
  logs in. No session is ever authenticated without it, so no view, admin page or console
  socket needs a "verified" check of its own.
* The admin's login page sends to the console's (``AdminLoginThroughConsoleMiddleware``), so
  staff sign in through the same throttling and second factor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_lockout_response
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login, user_login_failed
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from tenants import totp

SECOND_FACTOR_PENDING_SESSION_KEY = "vp_second_factor_pending"


def client_ip_address(request: HttpRequest) -> str | None:
    """The address throttling counts (``AXES_CLIENT_IP_CALLABLE``).

    REMOTE_ADDR, unless the operator names a header their proxy sets
    (``VP_LOGIN_CLIENT_IP_HEADER``): then its last address, the one the nearest proxy wrote (a
    client can put anything before it, not after it).
    """
    header = settings.VP_LOGIN_CLIENT_IP_HEADER
    if header:
        value = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
        address = value.rsplit(",", 1)[-1].strip()
        if address:
            return address
    return request.META.get("REMOTE_ADDR")


class LoginThrottleBackend(AxesStandaloneBackend):
    """axes' lockout check; authenticating is left to ModelBackend, after it.

    A call without a request (a management command, the shell) has no client to throttle and is
    passed on; every sign-in over HTTP (the console's form, Django's AuthenticationForm) hands
    its request to ``authenticate``.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class AdminLoginThroughConsoleMiddleware:
    """The admin's own login form would be a second door (no second factor): it sends to the
    console's login, which comes back to the admin page asked for."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == reverse("admin:login"):
            next_url = request.GET.get("next") or reverse("admin:index")
            return redirect(f"{reverse('login')}?{urlencode({'next': next_url})}")
        return self.get_response(request)


class PasswordResetLinkForm(forms.Form):
    """The mailed link's fragment, ``<uidb64>/<token>``, as the page's script posts it."""

    link = forms.RegexField(regex=r"^[0-9A-Za-z_\-]+/[0-9A-Za-z]+-[0-9A-Za-z]+$", max_length=200)


@never_cache
@csrf_protect
def password_reset_link(request: HttpRequest) -> HttpResponse:
    """The reset link's page (``/reset/#<uidb64>/<token>``): its script posts the fragment here.

    The token goes where Django's own first visit of ``/reset/<uidb64>/<token>/`` would put it,
    the session, and the browser moves to Django's confirm view at its token-less URL, which
    checks it. The token is never in a URL that reaches a server, so in no access log.
    """
    form = PasswordResetLinkForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        uidb64, token = form.cleaned_data["link"].split("/")
        request.session[auth_views.INTERNAL_RESET_SESSION_TOKEN] = token
        return redirect("password_reset_confirm", uidb64=uidb64)
    status = 400 if request.method == "POST" else 200
    return render(request, "registration/password_reset_link.html", {"form": form}, status=status)


class SecondFactorForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator app",
        max_length=10,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )


class LoginView(auth_views.LoginView):
    """Django's login; a member with a second factor is sent on to the code instead."""

    redirect_authenticated_user = True

    def form_valid(self, form: Any) -> HttpResponse:
        user = form.get_user()
        if totp.device_confirmed(user) is None:
            self.request.session.pop(SECOND_FACTOR_PENDING_SESSION_KEY, None)  # an earlier try
            return super().form_valid(form)
        self.request.session[SECOND_FACTOR_PENDING_SESSION_KEY] = {
            "user_id": user.pk,
            "backend": user.backend,
            "next": self.get_success_url(),
            "started": time.time(),
        }
        return redirect("login-code")


def _pending_second_factor(request: HttpRequest) -> tuple[Any, dict[str, Any]] | None:
    pending = request.session.get(SECOND_FACTOR_PENDING_SESSION_KEY)
    if not pending:
        return None
    if time.time() - pending["started"] > settings.VP_LOGIN_CODE_TIMEOUT_SECONDS:
        return None
    user = get_user_model().objects.filter(pk=pending["user_id"], is_active=True).first()
    if user is None:
        return None
    return user, pending


@never_cache
@csrf_protect
def login_code(request: HttpRequest) -> HttpResponse:
    """Second step of a login: the code. A wrong code counts as a failed login (throttling)."""
    found = _pending_second_factor(request)
    device = totp.device_confirmed(found[0]) if found else None
    if found is None or device is None:
        request.session.pop(SECOND_FACTOR_PENDING_SESSION_KEY, None)
        messages.error(request, "Your login timed out. Enter your password again.")
        return redirect("login")
    user, pending = found
    credentials = {"username": user.get_username()}
    form = SecondFactorForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if not AxesProxyHandler.is_allowed(request, credentials):
            return get_lockout_response(request, None, credentials)
        if totp.code_verify(device=device, code=form.cleaned_data["code"]):
            del request.session[SECOND_FACTOR_PENDING_SESSION_KEY]
            login(request, user, backend=pending["backend"])
            return redirect(pending["next"])
        # axes counts it; AxesMiddleware answers 429 once this failure reaches the limit.
        user_login_failed.send(sender=__name__, credentials=credentials, request=request)
        form.add_error("code", "That code is not valid. Enter the current one.")
    return render(request, "registration/login_code.html", {"form": form})


@never_cache
@login_required
def second_factor(request: HttpRequest) -> HttpResponse:
    """Turn the second factor on (secret and QR code, confirmed by a code) or off (a code)."""
    user = request.user
    form = SecondFactorForm(request.POST or None)
    device = totp.device_confirmed(user)
    if device is not None:
        if request.method == "POST" and form.is_valid():
            if totp.code_verify(device=device, code=form.cleaned_data["code"]):
                totp.second_factor_reset(user=user)
                messages.success(request, "Two-factor authentication is off.")
                return redirect("second-factor")
            form.add_error("code", "That code is not valid.")
        return render(request, "registration/second_factor.html", {"enabled": True, "form": form})
    device, secret = totp.enrolment_start(user=user)
    if request.method == "POST" and form.is_valid():
        if totp.enrolment_confirm(device=device, code=form.cleaned_data["code"]):
            messages.success(
                request, "Two-factor authentication is on: every login now asks for a code."
            )
            return redirect("second-factor")
        form.add_error("code", "That code is not valid. Check the app's clock and try again.")
    uri = totp.provisioning_uri(user=user, secret=secret)
    context = {"enabled": False, "form": form, "secret": secret, "uri": uri}
    context["qr_svg"] = totp.qr_svg(uri)
    return render(request, "registration/second_factor.html", context)


class ThrottledPasswordResetView(auth_views.PasswordResetView):
    """Django's reset request, limited per client address and per e-mail address (django-
    ratelimit, ``VP_PASSWORD_RESET_RATE``), so that nobody can mail-bomb a member or probe at
    speed. Over the limit the answer is the same "sent" page without sending (no enumeration,
    nothing to learn from the limit either)."""

    def form_valid(self, form: Any) -> HttpResponse:
        from tenants.ratelimits import first_limited

        rate = settings.VP_PASSWORD_RESET_RATE
        email = form.cleaned_data.get("email", "").strip().lower()
        limited = first_limited(
            self.request,
            group="password-reset",
            checks=(("address", "ip", rate), ("email", lambda group, request: email, rate)),
        )
        if limited is not None:
            return redirect(self.get_success_url())
        return super().form_valid(form)
