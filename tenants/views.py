"""Console pages for tenant settings: API keys, widget keys, the provider credential."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from tenants import services
from tenants.access import memberships_for_user, tenant_object_get
from tenants.console import tenant_view
from tenants.forms import (
    AcceptInvitationForm,
    ApiKeyForm,
    DataPolicyForm,
    ErasureForm,
    InvitationForm,
    ProviderCredentialForm,
    RetentionForm,
    WidgetAppearanceForm,
    WidgetKeyForm,
    WidgetOriginsForm,
    WidgetVersionForm,
)
from tenants.models import (
    RETENTION_FIELDS,
    WIDGET_APPEARANCE_FIELDS,
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    ProviderCredential,
    Role,
    WidgetKey,
)


@login_required
def console_home(request: HttpRequest) -> HttpResponse:
    """Send the user to the tenant they used last, or their first one."""
    memberships = memberships_for_user(user=request.user)
    if not memberships:
        return render(request, "console/no_tenant.html", status=200)
    last = request.session.get("vp_last_tenant")
    slugs = [membership.tenant.slug for membership in memberships]
    return redirect("tenant-dashboard", tenant_slug=last if last in slugs else slugs[0])


def active_agent_count() -> int:
    agent = ApiKey.agent_model()
    return agent.objects.filter(status=agent.Status.ACTIVE).count()


@tenant_view()
def tenant_dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        "agent_count": active_agent_count(),
        "api_key_count": ApiKey.objects.filter(revoked_at__isnull=True).count(),
        "widget_key_count": WidgetKey.objects.filter(revoked_at__isnull=True).count(),
        "credential": ProviderCredential.objects.first(),
    }
    return render(request, "console/dashboard.html", context)


@tenant_view(configure_changes=True)
def api_key_list(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    new_key = None
    if request.method == "POST":
        if form.is_valid():
            _, new_key = services.api_key_issue(
                tenant=request.tenant,
                name=form.cleaned_data["name"],
                default_agent=form.cleaned_data["default_agent"],
                scopes=form.cleaned_data["scopes"],
            )
            messages.success(request, "API key issued. Copy it now: it is shown only once.")
            form = ApiKeyForm()
    context = {"api_keys": ApiKey.objects.order_by("-created_at"), "form": form, "new_key": new_key}
    return render(request, "console/api_keys.html", context)


@require_POST
@tenant_view(configure=True)
def api_key_revoke(request: HttpRequest, api_key_id: int) -> HttpResponse:
    api_key = tenant_object_get(ApiKey, pk=api_key_id)
    services.api_key_revoke(api_key=api_key, actor=request.user)
    messages.success(request, f"API key {api_key.prefix}… revoked.")
    return redirect("api-key-list", tenant_slug=request.tenant.slug)


@tenant_view(configure_changes=True)
def widget_key_list(request: HttpRequest) -> HttpResponse:
    form = WidgetKeyForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                widget_key = services.widget_key_create(
                    tenant=request.tenant,
                    name=form.cleaned_data["name"],
                    allowed_origins=form.cleaned_data["allowed_origins"],
                    agent=form.cleaned_data.get("agent"),
                    actor=request.user,
                    version_number=form.cleaned_data.get("version"),
                )
            except services.ServiceError as error:
                form.add_error("version", str(error))
            else:
                messages.success(request, f"Widget key {widget_key.name} created.")
                return redirect("widget-key-detail", request.tenant.slug, widget_key.pk)
    context = {"widget_keys": WidgetKey.objects.order_by("-created_at"), "form": form}
    return render(request, "console/widget_keys.html", context)


@tenant_view(configure_changes=True)
def widget_key_detail(request: HttpRequest, widget_key_id: int) -> HttpResponse:
    """The embed snippet, the allowed origins and the widget's appearance (with a live preview
    drawn by static/console/widget-preview.js from the form's inputs)."""
    widget_key = tenant_object_get(WidgetKey, pk=widget_key_id)
    posted = request.POST if request.method == "POST" else None
    which = request.POST.get("form", "origins") if posted else ""
    version_form = WidgetVersionForm(
        posted if which == "version" else None,
        initial={"version": widget_key.version.number if widget_key.version else None},
    )
    form = WidgetOriginsForm(
        posted if which == "origins" else None,
        initial={"allowed_origins": "\n".join(widget_key.allowed_origins)},
    )
    # A ModelForm on a copy: a refused value must not leak into the snippet's facts on re-render.
    appearance_form = WidgetAppearanceForm(
        posted if which == "appearance" else None,
        instance=WidgetKey(
            **{name: getattr(widget_key, name) for name in WIDGET_APPEARANCE_FIELDS}
        ),
    )
    if which == "version" and version_form.is_valid():
        try:
            services.widget_key_pin(
                widget_key=widget_key,
                version_number=version_form.cleaned_data["version"],
                actor=request.user,
            )
        except services.ServiceError as error:
            version_form.add_error("version", str(error))
        else:
            messages.success(request, "Version pin saved.")
            return redirect("widget-key-detail", request.tenant.slug, widget_key.pk)
    if which == "origins" and form.is_valid():
        services.widget_key_update_origins(
            widget_key=widget_key,
            allowed_origins=form.cleaned_data["allowed_origins"],
            actor=request.user,
        )
        messages.success(request, "Allowed origins saved.")
        return redirect("widget-key-detail", request.tenant.slug, widget_key.pk)
    if which == "appearance" and appearance_form.is_valid():
        services.widget_key_set_appearance(
            widget_key=widget_key,
            appearance={
                name: appearance_form.cleaned_data[name] for name in WIDGET_APPEARANCE_FIELDS
            },
            actor=request.user,
        )
        messages.success(request, "Appearance saved: pages with this key show it from now on.")
        return redirect("widget-key-detail", request.tenant.slug, widget_key.pk)
    script_url = request.build_absolute_uri("/static/widget/voiceplatform-widget.js")
    agent_attribute = f' data-agent="{widget_key.agent_id}"' if widget_key.agent_id else ""
    snippet = (
        f'<script src="{script_url}" data-key="{widget_key.key}"{agent_attribute} async></script>'
    )
    preview_url = f"/widget/demo/?key={widget_key.key}"
    context = {
        "widget_key": widget_key,
        "form": form,
        "version_form": version_form,
        "appearance_form": appearance_form,
        "snippet": snippet,
        "preview_url": preview_url,
        "preview_allowed": request.build_absolute_uri("/").rstrip("/")
        in widget_key.allowed_origins,
    }
    return render(request, "console/widget_key_detail.html", context)


@require_POST
@tenant_view(configure=True)
def widget_key_revoke(request: HttpRequest, widget_key_id: int) -> HttpResponse:
    widget_key = tenant_object_get(WidgetKey, pk=widget_key_id)
    services.widget_key_revoke(widget_key=widget_key, actor=request.user)
    messages.success(request, f"Widget key {widget_key.name} revoked.")
    return redirect("widget-key-list", tenant_slug=request.tenant.slug)


@tenant_view(configure_changes=True)
def credentials(request: HttpRequest) -> HttpResponse:
    revealed = None  # the webhook signing secret, shown once
    rotating = request.method == "POST" and request.POST.get("action") == "rotate_webhook_secret"
    if rotating:
        revealed = services.webhook_secret_rotate(tenant=request.tenant, actor=request.user)
        messages.success(
            request,
            "New signing secret created. Copy it now: it is not shown again. The previous "
            f"one stays valid for {settings.VP_WEBHOOK_SECRET_OVERLAP_HOURS:g} hours.",
        )
    elif request.method == "GET" and request.membership.can_configure:
        revealed = services.webhook_secret_first_view(tenant=request.tenant)
    form = ProviderCredentialForm(None if rotating else (request.POST or None))
    if request.method == "POST" and not rotating:
        if form.is_valid():
            try:
                credential = services.provider_credential_set(
                    tenant=request.tenant, secret=form.cleaned_data["secret"], actor=request.user
                )
            except services.ServiceError as error:
                form.add_error("secret", str(error))
            else:
                messages.success(request, f"OpenAI key {credential.masked} saved.")
                return redirect("credentials", tenant_slug=request.tenant.slug)
    request.tenant.refresh_from_db()
    context = {
        "credential": ProviderCredential.objects.first(),
        "form": form,
        "webhook_secret": revealed,
        "tenant": request.tenant,
        "now": timezone.now(),
    }
    response = render(request, "console/credentials.html", context)
    add_never_cache_headers(response)  # a page that may show a secret is never stored
    return response


@tenant_view(configure_changes=True)
def data_retention(request: HttpRequest) -> HttpResponse:
    """Retention windows (every member reads them; owners and admins change them), and the
    form that starts an erasure (its confirmation and the erasure itself are the agents app's
    ``erasure-confirm``)."""
    tenant = request.tenant
    current = {name: getattr(tenant, name) for name in RETENTION_FIELDS}
    form = RetentionForm(request.POST or None, initial=current)
    if request.method == "POST" and form.is_valid():
        services.tenant_retention_set(tenant=tenant, days=form.cleaned_data, actor=request.user)
        messages.success(request, "Retention saved. The hourly sweep applies it.")
        return redirect("data-retention", tenant_slug=tenant.slug)
    context = {"form": form, "erasure_form": ErasureForm()}
    return render(request, "console/data.html", context)


@tenant_view(configure_changes=True)
def data_policy(request: HttpRequest) -> HttpResponse:
    """What of a conversation is kept (everything, redacted, or its metadata only) and whether
    sessions are recorded (as each agent says, always, or never)."""
    tenant = request.tenant
    form = DataPolicyForm(
        request.POST if request.method == "POST" else None,
        initial={"data_policy": tenant.data_policy, "recording_policy": tenant.recording_policy},
    )
    if request.method == "POST" and form.is_valid():
        changed = services.tenant_data_policy_set(
            tenant=tenant, policy=form.cleaned_data["data_policy"], actor=request.user
        )
        changed |= services.tenant_recording_policy_set(
            tenant=tenant,
            policy=form.cleaned_data["recording_policy"] or tenant.recording_policy,
            actor=request.user,
        )
        if changed:
            messages.success(request, "Data policy saved: sessions starting from now follow it.")
        return redirect("data-policy", tenant_slug=tenant.slug)
    return render(request, "console/data_policy.html", {"form": form})


# --- members and audit ------------------------------------------------------------------


@tenant_view(configure_changes=True)
def member_list(request: HttpRequest) -> HttpResponse:

    form = InvitationForm(request.POST or None)
    invitation_link = None
    if request.method == "POST":
        if form.is_valid():
            try:
                _, raw = services.invitation_create(
                    tenant=request.tenant,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    actor=request.user,
                )
            except services.ServiceError as error:
                messages.error(request, str(error))
            else:
                # The token goes in the fragment: browsers never send it, so no log sees it.
                accept_url = request.build_absolute_uri(reverse("invitation-accept"))
                invitation_link = f"{accept_url}#{raw}"
                messages.success(request, "Invitation created. Send this link to the new member.")
                form = InvitationForm()
    context = {
        "memberships": Membership.objects.select_related("user").order_by("user__username"),
        "invitations": Invitation.objects.filter(accepted_at__isnull=True).order_by("-created_at"),
        "form": form,
        "roles": Role.choices,
        "invitation_link": invitation_link,
        "now": timezone.now(),
    }
    return render(request, "console/members.html", context)


@require_POST
@tenant_view(configure=True)
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:

    membership = tenant_object_get(Membership, pk=membership_id)
    try:
        services.membership_set(
            tenant=request.tenant, user=membership.user, role=request.POST.get("role", ""),
            actor=request.user,
        )  # fmt: skip
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request, f"{membership.user.get_username()} is now {request.POST['role']}."
        )
    return redirect("member-list", tenant_slug=request.tenant.slug)


@require_POST
@tenant_view(configure=True)
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:

    membership = tenant_object_get(Membership, pk=membership_id)
    try:
        services.membership_remove(membership=membership, actor=request.user)
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{membership.user.get_username()} was removed.")
    return redirect("member-list", tenant_slug=request.tenant.slug)


@require_POST
@tenant_view(configure=True)
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = tenant_object_get(Invitation, pk=invitation_id, accepted_at__isnull=True)
    services.invitation_revoke(invitation=invitation, actor=request.user)
    messages.success(request, f"The invitation of {invitation.email} was revoked.")
    return redirect("member-list", tenant_slug=request.tenant.slug)


@tenant_view()
def audit_log(request: HttpRequest) -> HttpResponse:

    events = AuditEvent.objects.select_related("actor").order_by("-created_at", "-pk")[:200]
    return render(request, "console/audit.html", {"events": events})


# The hash of the invitation this browser presented (see ``invitation_accept``).
PENDING_INVITATION_SESSION_KEY = "vp_pending_invitation"


def _invitation_not_found(request: HttpRequest) -> HttpResponse:
    request.session.pop(PENDING_INVITATION_SESSION_KEY, None)
    return render(request, "console/invitation.html", {"invalid": True}, status=404)


def invitation_link_retired(request: HttpRequest, token: str) -> HttpResponse:
    """Links of the old form, ``/invitations/<token>/``, put the token in every access log on the
    way: they are refused (410) without a look-up, and Django's request log skips them."""
    response = render(request, "console/invitation.html", {"retired": True}, status=410)
    response._has_been_logged = True  # django.utils.log.log_response: the path holds a token
    return response


@never_cache
def invitation_accept(request: HttpRequest) -> HttpResponse:
    """The invitation page (``/invitations/#vp_inv_…``): log in or set a password, then join.

    The token travels in the link's fragment, which browsers never send, so no URL that reaches
    a log holds it. The page's script (static/console/invitation.js) posts it as ``token`` in a
    CSRF-protected form; from then on this browser's session holds only the token's hash, and the
    page is reloaded without it (login in between keeps the session's data).
    """
    if request.method == "POST" and "token" in request.POST:
        hashed_token = services.invitation_token_hash(request.POST["token"])
        if services.invitation_find(hashed_token=hashed_token) is None:
            return _invitation_not_found(request)
        request.session[PENDING_INVITATION_SESSION_KEY] = hashed_token
        return redirect("invitation-accept")
    hashed_token = request.session.get(PENDING_INVITATION_SESSION_KEY)
    if not hashed_token:
        # Nothing presented yet: the page whose script reads the fragment (or a paste field).
        return render(request, "console/invitation.html", {"reading_link": True})
    invitation = services.invitation_find(hashed_token=hashed_token)
    if invitation is None:
        return _invitation_not_found(request)
    user_exists = get_user_model().objects.filter(username=invitation.email).exists()
    form = AcceptInvitationForm(request.POST or None)
    if request.method == "POST":
        user = request.user if request.user.is_authenticated else None
        if user is None and not user_exists and form.is_valid():
            user = services.user_get_or_create(
                email=invitation.email, password=form.cleaned_data["password"]
            )
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        if user is not None:
            try:
                services.invitation_accept(hashed_token=hashed_token, user=user)
            except services.ServiceError as error:
                messages.error(request, str(error))
                return redirect("console-home")
            finally:
                request.session.pop(PENDING_INVITATION_SESSION_KEY, None)
            messages.success(request, f"Welcome to {invitation.tenant.name}.")
            return redirect("tenant-dashboard", tenant_slug=invitation.tenant.slug)
    context = {"invitation": invitation, "form": form, "user_exists": user_exists}
    return render(request, "console/invitation.html", context)
