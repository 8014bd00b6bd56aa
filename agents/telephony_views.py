"""Phone calls over HTTP: Twilio's voice webhook, and the console page of phone numbers.

``POST /twilio/voice`` is what Twilio calls when one of the tenant's numbers rings. The called
number (``To``) names the tenant and the agent; the request must carry a valid
``X-Twilio-Signature`` made with that number's Twilio auth token; the answer is TwiML that
connects the call's audio to ``/twilio/stream/`` with a single-use token (60 s) as a stream
parameter. Refusals: an unknown number hears "not in service" (404, the same for a number of no
tenant and a number Twilio should not have sent here), a bad signature gets a bare 403, and a
suspended tenant, a tenant at its limits or an archived agent hears "not available" and the call
hangs up.
"""

from __future__ import annotations

import logging
import re

from django import forms
from django.contrib import messages
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from agents import access, catalogue, configuration, services, tokens
from agents.access import PHONE_END_USER_PREFIX
from agents.models import Agent, AgentVersion, PhoneNumber
from agents.realtime.variables import QUERY_PREFIX, variables_collect
from agents.selectors import agent_variable_defaults
from agents.telephony import (
    CALLER_VARIABLE,
    NUMBER_PARAMETER,
    TOKEN_PARAMETER,
    UNAVAILABLE_MESSAGE,
    stream_url,
    twilio_signature_valid,
    twiml_connect_stream,
    twiml_reject,
    twiml_say_hangup,
)
from tenants import crypto
from tenants.access import tenant_object_get
from tenants.audit import audit_record
from tenants.console import tenant_view
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import ServiceError

logger = logging.getLogger(__name__)

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
TWIML_CONTENT_TYPE = "text/xml; charset=utf-8"


# --- selectors and services ------------------------------------------------------------------


def phone_number_for_call(*, number: str) -> PhoneNumber | None:
    """The configured number a call was made to, whichever tenant owns it (None: unknown)."""
    if not E164.fullmatch(number):
        return None
    with scopes_disabled():  # the called number is what names the tenant
        return (
            PhoneNumber.objects.select_related("tenant", "agent__live_version", "version")
            .filter(number=number)
            .first()
        )


def phone_caller_end_user(*, tenant_id: int, caller: str) -> str:
    """The end user of a call: the caller's number, hashed (the number itself is not kept)."""
    hashed = services.end_user_hash(tenant_id=tenant_id, end_user=caller or "unknown")
    return f"{PHONE_END_USER_PREFIX}{hashed}"


def call_variables(request: HttpRequest, *, agent: Agent) -> dict[str, str]:
    """A call's prompt variables as stream parameters (``var_<name>``): the caller's number
    (``{{caller_number}}``) and the webhook URL's ``var_*`` query (a tenant may configure its
    number's webhook as ``…/twilio/voice/?var_region=eu``). Only the names the agent declares:
    the caller's number leaves the platform only for an agent that asks for it."""
    raw = {
        name[len(QUERY_PREFIX) :]: value
        for name, value in request.GET.items()
        if name.startswith(QUERY_PREFIX)
    }
    if request.POST.get("From"):
        raw[CALLER_VARIABLE] = request.POST["From"]
    values = variables_collect(raw, allowed=agent_variable_defaults(agent))
    return {QUERY_PREFIX + name: value for name, value in values.items()}


def phone_number_auth_token(*, tenant_id: int, number: str) -> str:
    """The decrypted Twilio auth token of the tenant's number ("" when unknown)."""
    with tenant_scope(tenant_id):
        phone_number = PhoneNumber.objects.filter(number=number).first()
    if phone_number is None:
        return ""
    try:
        return crypto.decrypt(phone_number.twilio_auth_token_encrypted)
    except crypto.CredentialDecryptionError:
        return ""


def phone_call_token_mint(*, phone_number: PhoneNumber, caller: str) -> tokens.MintedToken:
    """The single-use token of one call's media stream; refuses what a session would refuse.

    Raises ``AccessDenied`` for an archived agent, a suspended tenant, a tenant at its
    concurrency limit or over budget.
    """
    agent = phone_number.agent
    if agent.status != Agent.Status.ACTIVE:
        raise access.not_found()
    return tokens.phone_token_mint(
        agent=agent,
        end_user=phone_caller_end_user(tenant_id=phone_number.tenant_id, caller=caller),
        version=phone_number.version,
    )


def phone_number_create(
    *,
    tenant: Tenant,
    number: str,
    agent: Agent,
    auth_token: str,
    actor: AbstractBaseUser | None,
    version: AgentVersion | None = None,
) -> PhoneNumber:
    """Route ``number`` to ``agent`` (pinned to one of its published versions, or following
    the live one); the Twilio auth token is stored encrypted, shown masked."""
    if agent.tenant_id != tenant.pk:
        raise access.not_found()
    if version is not None and version.agent_id != agent.pk:
        raise ServiceError("That version belongs to another agent.")
    with scopes_disabled():  # numbers are unique across tenants: a number rings one place
        taken = PhoneNumber.objects.filter(number=number).exists()
    if taken:
        raise ServiceError("This number is already configured.")
    try:
        with tenant_scope(tenant), transaction.atomic():
            phone_number = PhoneNumber.objects.create(
                tenant=tenant,
                number=number,
                agent=agent,
                version=version,
                twilio_auth_token_encrypted=crypto.encrypt(auth_token),
                twilio_auth_token_masked=crypto.mask(auth_token),
            )
    except IntegrityError:  # configured concurrently
        raise ServiceError("This number is already configured.") from None
    audit_record(
        tenant=tenant, actor=actor, action="phone_number.create", target=phone_number,
        changes={"number": number, "agent": agent.pk,
                 "version": version.number if version else "live",
                 "auth_token": phone_number.twilio_auth_token_masked},
    )  # fmt: skip
    return phone_number


def phone_number_delete(*, phone_number: PhoneNumber, actor: AbstractBaseUser | None) -> None:
    """Stop routing a number: calls to it are refused from now on."""
    number, pk, tenant_id = phone_number.number, phone_number.pk, phone_number.tenant_id
    with tenant_scope(tenant_id):
        PhoneNumber.objects.filter(pk=pk).delete()
    audit_record(
        tenant=tenant_id, actor=actor, action="phone_number.delete",
        target_type="phonenumber", target_label=number, changes={"number": number, "id": pk},
    )  # fmt: skip


# --- the voice webhook -----------------------------------------------------------------------


def _twiml(body: str, *, status: int = 200) -> HttpResponse:
    return HttpResponse(body, content_type=TWIML_CONTENT_TYPE, status=status)


def _public_url(request: HttpRequest) -> str:
    """The URL as Twilio called it: behind a TLS-terminating proxy the scheme is the proxy's.

    Trusting ``X-Forwarded-Proto`` here is safe: a forged scheme only changes the URL the
    signature must match, and only Twilio (holding the auth token) can sign it.
    """
    url = request.build_absolute_uri()
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if forwarded in ("http", "https") and not url.startswith(forwarded + "://"):
        url = forwarded + url[url.index("://") :]
    return url


@csrf_exempt  # Twilio signs its requests instead
@require_POST
def twilio_voice(request: HttpRequest) -> HttpResponse:
    phone_number = phone_number_for_call(number=request.POST.get("To", ""))
    if phone_number is None:
        return _twiml(twiml_reject(), status=404)
    url = _public_url(request)
    params = [(name, value) for name, values in request.POST.lists() for value in values]
    try:
        auth_token = crypto.decrypt(phone_number.twilio_auth_token_encrypted)
    except crypto.CredentialDecryptionError:
        logger.error(
            "the Twilio auth token of phone number %s cannot be decrypted", phone_number.pk
        )
        auth_token = ""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not twilio_signature_valid(
        auth_token=auth_token, url=url, params=params, signature=signature
    ):
        logger.warning(
            "refused a voice webhook with a bad signature for number %s", phone_number.pk
        )
        return HttpResponse("Invalid Twilio signature.", status=403, content_type="text/plain")
    try:
        minted = phone_call_token_mint(
            phone_number=phone_number, caller=request.POST.get("From", "")
        )
    except access.AccessDenied as denied:
        logger.info("call to number %s refused: %s", phone_number.pk, denied.code)
        return _twiml(twiml_say_hangup(UNAVAILABLE_MESSAGE))
    twiml = twiml_connect_stream(
        stream_url=stream_url(webhook_url=url),
        parameters={
            TOKEN_PARAMETER: minted.value,
            NUMBER_PARAMETER: phone_number.number,
            **call_variables(request, agent=phone_number.agent),
        },
    )
    return _twiml(twiml)


# --- the console page ------------------------------------------------------------------------


class PhoneNumberForm(forms.Form):
    number = forms.CharField(
        max_length=24,
        help_text="In E.164 form, as Twilio shows it: +14155550100.",
        widget=forms.TextInput(attrs={"placeholder": "+14155550100"}),
    )
    agent = forms.ModelChoiceField(queryset=None, empty_label=None)
    version = forms.IntegerField(
        label="Pin to version",
        required=False,
        min_value=1,
        help_text="Empty: calls run whichever version of the agent is live. A number: calls "
        "run that published version, whatever is published later.",
    )
    twilio_auth_token = forms.CharField(
        label="Twilio auth token",
        max_length=128,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="The auth token of the Twilio account that owns the number (Twilio console, "
        "Account info). It validates Twilio's request signatures; stored encrypted.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].queryset = Agent.objects.filter(
            status=Agent.Status.ACTIVE, kind=catalogue.VOICE_AGENT
        ).order_by("name")

    def clean_number(self) -> str:
        number = re.sub(r"[\s\-().]", "", self.cleaned_data["number"])
        if not E164.fullmatch(number):
            raise forms.ValidationError("Enter the number in E.164 form, e.g. +14155550100.")
        return number

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        try:
            cleaned["pinned"] = configuration.agent_version_for_pin(
                agent=cleaned.get("agent"), number=cleaned.get("version")
            )
        except ValidationError as error:
            self.add_error("version", error.message_dict["version"])
        return cleaned

    def clean_twilio_auth_token(self) -> str:
        token = self.cleaned_data["twilio_auth_token"]
        if len(token) < 16 or any(character.isspace() for character in token):
            raise forms.ValidationError("That does not look like a Twilio auth token.")
        return token


@tenant_view(configure_changes=True)
def phone_number_list(request: HttpRequest) -> HttpResponse:
    form = PhoneNumberForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                phone_number = phone_number_create(
                    tenant=request.tenant,
                    number=form.cleaned_data["number"],
                    agent=form.cleaned_data["agent"],
                    auth_token=form.cleaned_data["twilio_auth_token"],
                    actor=request.user,
                    version=form.cleaned_data["pinned"],
                )
            except ServiceError as error:
                form.add_error("number", str(error))
            else:
                messages.success(request, f"{phone_number.number} now rings {phone_number.agent}.")
                return redirect("phone-number-list", tenant_slug=request.tenant.slug)
    context = {
        "phone_numbers": PhoneNumber.objects.select_related("agent", "version").order_by("number"),
        "form": form,
        "webhook_url": request.build_absolute_uri(reverse("twilio-voice")),
    }
    return render(request, "console/phone_numbers.html", context)


@require_POST
@tenant_view(configure=True)
def phone_number_remove(request: HttpRequest, phone_number_id: int) -> HttpResponse:
    phone_number = tenant_object_get(PhoneNumber, pk=phone_number_id)
    phone_number_delete(phone_number=phone_number, actor=request.user)
    messages.success(request, f"{phone_number.number} removed: calls to it are refused.")
    return redirect("phone-number-list", tenant_slug=request.tenant.slug)
