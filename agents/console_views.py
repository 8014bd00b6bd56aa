"""Console pages for agents: configuration, versions, tools, try-it, sessions."""

from __future__ import annotations

import json
from datetime import UTC
from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from agents import (
    access,
    analysis,
    analytics,
    catalogue,
    configuration,
    recordings,
    retention,
    search,
    services,
    session_selectors,
    tokens,
    transcript_export,
)
from agents.byte_ranges import ranged_response
from agents.forms import AgentForm, FunctionToolForm, McpServerForm
from agents.models import (
    Agent,
    AgentVersion,
    Recording,
    Session,
    SessionAnalysis,
    SessionSegment,
    SessionSummary,
    TranscriptItem,
)
from agents.selectors import agent_runs_on_local_fallback, agent_variable_defaults
from agents.views import agent_public_info
from billing import charts, figures, pricing
from billing.models import UsageEvent
from billing.selectors import event_counts, events_total_cost, plan_terms
from tenants.access import tenant_object_get
from tenants.console import tenant_view
from tenants.forms import ErasureForm
from tenants.models import DataPolicy

# A session's tokens as every console figure counts them (billing.figures): input excludes
# cached tokens, which are their own figure.
TOKEN_TYPES_SHOWN = [
    token_type for token_type in pricing.TOKEN_TYPES if token_type.unit == "tokens"
]


def _form_errors_from(error: ValidationError, form) -> None:
    for field, messages_ in error.message_dict.items():
        target = field if field in form.fields else None
        for message in messages_:
            form.add_error(target, message)


@tenant_view()
def agent_list(request: HttpRequest) -> HttpResponse:
    show = request.GET.get("show", "active")
    agents = Agent.objects.select_related("live_version").order_by("name")
    agents = agents.filter(
        status=Agent.Status.ARCHIVED if show == "archived" else Agent.Status.ACTIVE
    )
    agents = list(agents)
    for agent in agents:
        agent.has_draft = bool(agent.live_version and configuration.draft_changes(agent))
    return render(request, "console/agents/list.html", {"agents": agents, "show": show})


@tenant_view(configure=True)
def agent_create(request: HttpRequest) -> HttpResponse:
    form = AgentForm(request.POST or None, initial={"provider": catalogue.PROVIDER_OPENAI})
    if request.method == "POST" and form.is_valid():
        try:
            agent = configuration.agent_create(
                tenant=request.tenant, actor=request.user, fields=form.cleaned_data
            )
        except ValidationError as error:
            _form_errors_from(error, form)
        else:
            messages.success(request, f"Agent {agent.name} created (version 1).")
            return redirect("agent-edit", request.tenant.slug, agent.pk)
    return render(request, "console/agents/form.html", {"form": form, "agent": None})


def _draft_context(agent: Agent) -> dict:
    """What the agent pages show of the draft: its differences from the live version."""
    return {"draft_changes": configuration.draft_changes(agent)}


@tenant_view(configure_changes=True)
def agent_edit(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = tenant_object_get(Agent, pk=agent_id)
    form = AgentForm(request.POST or None, instance=agent)
    if request.method == "POST":
        if form.is_valid():
            try:
                changes = configuration.agent_update(
                    agent=agent, actor=request.user, fields=form.cleaned_data
                )
            except ValidationError as error:
                _form_errors_from(error, form)
            else:
                if changes is None:
                    messages.info(request, "Nothing changed.")
                else:
                    messages.success(
                        request,
                        "Saved to the draft. Try it, then publish to make it live: "
                        "until then, sessions run the live version.",
                    )
                return redirect("agent-edit", request.tenant.slug, agent.pk)
        agent.refresh_from_db()  # the form wrote its invalid values onto the instance
    versions = AgentVersion.objects.filter(agent=agent).select_related("created_by")[:10]
    return render(
        request,
        "console/agents/form.html",
        {
            "form": form,
            "agent": agent,
            "versions": versions,
            "engine_fallback": agent_runs_on_local_fallback(agent=agent),
            **_draft_context(agent),
        },
    )


@require_POST
@tenant_view(configure=True)
def agent_publish(request: HttpRequest, agent_id: int) -> HttpResponse:
    """Publish the draft as a new live version."""
    agent = tenant_object_get(Agent, pk=agent_id)
    before = agent.live_version_id
    version = configuration.agent_publish(
        agent, request.user, note=request.POST.get("note", "").strip()
    )
    if version.pk == before:
        messages.info(request, f"Nothing to publish: the draft is version {version.number}.")
    else:
        messages.success(request, f"Published as version {version.number}, now live.")
    back = request.POST.get("next", "")
    if back in ("agent-versions", "agent-try", "agent-tools"):
        return redirect(back, request.tenant.slug, agent.pk)
    return redirect("agent-edit", request.tenant.slug, agent.pk)


@require_POST
@tenant_view(configure=True)
def agent_duplicate(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = tenant_object_get(Agent, pk=agent_id)
    copy = configuration.agent_duplicate(agent=agent, actor=request.user)
    messages.success(request, f"Duplicated as {copy.name}.")
    return redirect("agent-edit", request.tenant.slug, copy.pk)


@require_POST
@tenant_view(configure=True)
def agent_archive(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = tenant_object_get(Agent, pk=agent_id)
    archive = agent.status == Agent.Status.ACTIVE
    status = Agent.Status.ARCHIVED if archive else Agent.Status.ACTIVE
    configuration.agent_set_status(agent=agent, actor=request.user, status=status)
    messages.success(request, f"{agent.name} {'archived' if archive else 'restored'}.")
    return redirect("agent-list", request.tenant.slug)


@tenant_view()
def agent_versions(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = tenant_object_get(Agent, pk=agent_id)
    versions = list(AgentVersion.objects.filter(agent=agent).select_related("created_by"))
    by_number = {version.number: version for version in versions}
    diff, left, right = None, None, None
    if request.GET.get("a") and request.GET.get("b"):
        try:
            left, right = by_number[int(request.GET["a"])], by_number[int(request.GET["b"])]
        except (KeyError, ValueError):
            raise Http404("No such version") from None
        diff = configuration.config_diff(
            configuration.version_config(left), configuration.version_config(right)
        )
    context = {"agent": agent, "versions": versions, "diff": diff, "left": left, "right": right}
    return render(request, "console/agents/versions.html", {**context, **_draft_context(agent)})


@require_POST
@tenant_view(configure=True)
def agent_rollback(request: HttpRequest, agent_id: int, version_id: int) -> HttpResponse:
    agent = tenant_object_get(Agent, pk=agent_id)
    version = tenant_object_get(AgentVersion, pk=version_id, agent=agent)
    configuration.agent_publish(agent, request.user, version)
    messages.success(request, f"Version {version.number} is live again; the draft is reset to it.")
    return redirect("agent-versions", request.tenant.slug, agent.pk)


@tenant_view(configure_changes=True)
def agent_tools(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = tenant_object_get(Agent, pk=agent_id)
    editing = request.GET.get("edit", "")
    current = next((tool for tool in agent.tools if tool.get("name") == editing), None)
    initial = None
    if current:
        initial = {**current, "parameters": json.dumps(current.get("parameters"), indent=2)}
    tool_form = FunctionToolForm(
        request.POST if request.POST.get("form") == "tool" else None, initial=initial
    )
    mcp_form = McpServerForm(request.POST if request.POST.get("form") == "mcp" else None)
    if request.method == "POST":
        try:
            if request.POST.get("form") == "tool" and tool_form.is_valid():
                configuration.agent_tool_save(
                    agent=agent, actor=request.user, tool=tool_form.cleaned_data,
                    replace=request.POST.get("replace", ""),
                )  # fmt: skip
                messages.success(
                    request, f"Tool {tool_form.cleaned_data['name']} saved to the draft."
                )
                return redirect("agent-tools", request.tenant.slug, agent.pk)
            if request.POST.get("form") == "mcp" and mcp_form.is_valid():
                configuration.agent_mcp_server_add(
                    agent=agent, actor=request.user, server=mcp_form.cleaned_data
                )
                messages.success(
                    request, f"MCP server {mcp_form.cleaned_data['label']} added to the draft."
                )
                return redirect("agent-tools", request.tenant.slug, agent.pk)
        except ValidationError as error:
            _form_errors_from(error, tool_form if request.POST.get("form") == "tool" else mcp_form)
    context = {"agent": agent, "tool_form": tool_form, "mcp_form": mcp_form, "editing": editing}
    return render(request, "console/agents/tools.html", {**context, **_draft_context(agent)})


@require_POST
@tenant_view(configure=True)
def agent_tool_delete(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = tenant_object_get(Agent, pk=agent_id)
    kind, name = request.POST.get("kind"), request.POST.get("name", "")
    if kind == "mcp":
        configuration.agent_mcp_server_delete(agent=agent, actor=request.user, label=name)
    else:
        configuration.agent_tool_delete(agent=agent, actor=request.user, name=name)
    messages.success(request, f"{name} removed from the draft.")
    return redirect("agent-tools", request.tenant.slug, agent.pk)


TRY_FORBIDDEN = (
    "Only owners and admins can try agents: Try-it talks to the unpublished draft, on the "
    "workspace's OpenAI key."
)


@tenant_view()
def agent_try(request: HttpRequest, agent_id: int) -> HttpResponse:
    """The Try-it page; other roles see why they cannot start one (the token is refused)."""
    agent = tenant_object_get(Agent, pk=agent_id)
    context = {
        "agent": agent,
        "forbidden": TRY_FORBIDDEN,
        "engine_fallback": agent_runs_on_local_fallback(agent=agent),
        "variables": agent_variable_defaults(agent),
        **_draft_context(agent),
    }
    return render(request, "console/agents/try.html", context)


@require_POST
@tenant_view()
def agent_try_token(request: HttpRequest, agent_id: int) -> HttpResponse:
    """A single-use socket token for the console's own Try-it widget (owners and admins): the
    session runs the agent's draft and is recorded on the console channel."""
    if not request.membership.can_configure:
        return JsonResponse({"error": {"code": "forbidden", "message": TRY_FORBIDDEN}}, status=403)
    agent = tenant_object_get(Agent, pk=agent_id, status=Agent.Status.ACTIVE)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = {}
    variables = body.get("variables") if isinstance(body, dict) else None
    try:
        minted = tokens.console_token_mint(
            agent=agent,
            end_user=f"console:{request.user.pk}",
            variables=variables if isinstance(variables, dict) else None,
        )
    except access.AccessDenied as denied:
        return JsonResponse(
            {"error": {"code": denied.code, "message": denied.message}}, status=denied.status
        )
    return JsonResponse(
        {
            "token": minted.value,
            "subprotocol": "openai-insecure-api-key",
            "expires_at": int(minted.expires_at.timestamp()),
            "socket_path": "/ws/widget/",
            "agent": agent_public_info(minted.agent),
        },
        status=201,
    )


# --- sessions ---------------------------------------------------------------------------


@tenant_view()
def session_list(request: HttpRequest) -> HttpResponse:
    filters = session_selectors.session_filters_parse(request.GET)
    page = session_selectors.session_page(
        filters,
        after=request.GET.get("after", ""),
        markup_percent=plan_terms(tenant_id=request.tenant.pk).markup_percent,
    )
    for error in filters.errors:
        messages.error(request, error)
    query = request.GET.copy()
    query.pop("after", None)
    context = {
        "page": page,
        "rows": page.rows,
        "sessions": [row.session for row in page.rows],
        "successes": SessionAnalysis.Success.choices,
        "filters": filters.raw,
        "filter_query": query.urlencode(),
        "agents": Agent.objects.order_by("name"),
        "channels": Session.Channel.choices,
        "end_reasons": Session.EndReason.choices,
        "show_provider_cost": request.user.is_staff,
    }
    return render(request, "console/sessions/list.html", context)


@tenant_view()
def session_analytics(request: HttpRequest) -> HttpResponse:
    start, end, error = analytics.date_range_parse(
        request.GET.dict(), today=timezone.now().astimezone(UTC).date()
    )
    if error:
        messages.error(request, error)
    numbers = analytics.session_analytics(tenant_id=request.tenant.pk, start=start, end=end)
    context = {
        "figures": numbers,
        "start": start,
        "end": end,
        "sessions_chart": charts.values_per_day(numbers.sessions_per_day, unit="sessions"),
        "minutes_chart": charts.values_per_day(
            numbers.minutes_per_day, unit="min", color=charts.PALETTE[1]
        ),
        "end_reason_chart": charts.horizontal_bars(
            [(label, count, str(count)) for label, count in numbers.end_reasons]
        ),
        "cost_chart": charts.horizontal_bars(
            [(name, float(billed), f"${billed:.4f}") for name, billed in numbers.billed_by_agent]
        ),
    }
    return render(request, "console/sessions/analytics.html", context)


@tenant_view()
def session_detail(request: HttpRequest, session_id: int) -> HttpResponse:
    session = tenant_object_get(Session, pk=session_id)
    items = TranscriptItem.objects.filter(session=session).order_by("sequence", "pk")
    usage = list(UsageEvent.objects.filter(session=session).order_by("occurred_at"))
    quantities = [pricing.billable_quantities(event_counts(event)) for event in usage]
    totals = {
        figures.quantity_label(token_type): sum(
            (each[token_type.code] for each in quantities), Decimal(0)
        )
        for token_type in TOKEN_TYPES_SHOWN
    }
    markup_percent = plan_terms(tenant_id=request.tenant.pk).markup_percent
    cost = events_total_cost(usage)  # provider cost: staff only
    session_analysis = SessionAnalysis.objects.filter(session=session).first()
    analysis_events = [event for event in usage if event.kind == UsageEvent.Kind.ANALYSIS]
    recording = recordings.recording_for_session(session)
    markers = recording.markers if recording is not None else {}
    items = list(items)
    query = request.GET.get("q", "").strip()
    for item in items:  # where the player seeks to for this line (None: not on the recording)
        item.offset_ms = markers.get(item.upstream_item_id)
        item.marked = search.highlight(item.text, query) if query else None
    context = {
        "analysis": session_analysis,
        "analysis_rows": analysis.analysis_rows(session_analysis) if session_analysis else [],
        "analysis_uncached_input": (
            max(session_analysis.input_tokens - session_analysis.cached_tokens, 0)
            if session_analysis
            else 0
        ),
        "analysis_billed": figures.billed_amount(
            events_total_cost(analysis_events), markup_percent=markup_percent
        ),
        "can_analyze": request.membership.can_configure and session.ended_at is not None,
        "recording": recording,
        "markers": markers,
        "can_download": request.membership.can_configure,
        "segments": SessionSegment.objects.filter(session=session).order_by("index"),
        "summary": SessionSummary.objects.filter(session=session).first(),
        "session": session,
        "items": items,
        "usage": usage,
        "totals": totals,
        "cost": cost,
        "billed": figures.billed_amount(cost, markup_percent=markup_percent),
        "show_provider_cost": request.user.is_staff,
        "cached_note": figures.CACHED_NOTE,
        "can_end": request.membership.can_configure and session.ended_at is None,
        "can_erase": request.membership.can_configure,
        "erased": session.end_user_hash == retention.ERASED,
        "query": query,
        "can_export": request.membership.can_configure,
        "engine_fallback": _ran_on_local_fallback(session, usage),
    }
    return render(request, "console/sessions/detail.html", context)


@require_GET
@tenant_view(configure=True)
def session_transcript_export(request: HttpRequest, session_id: int) -> HttpResponse:
    """The transcript as a download (``?format=txt``, the default, or ``json``), as stored;
    owners and admins, as for the recording's download: the file leaves the console's access
    control."""
    session = tenant_object_get(Session, pk=session_id)
    fmt = request.GET.get("format", "txt")
    if fmt not in transcript_export.FORMATS:
        return HttpResponse(
            "A transcript exports as format=txt or format=json.",
            status=400,
            content_type="text/plain",
        )
    items = list(TranscriptItem.objects.filter(session=session).order_by("sequence", "pk"))
    if fmt == "json":
        body, content_type = transcript_export.transcript_json(session, items), "application/json"
    else:
        body, content_type = transcript_export.transcript_text(session, items), "text/plain"
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="session-{session.pk}.{fmt}"'
    return response


def _ran_on_local_fallback(session: Session, usage: list[UsageEvent]) -> bool:
    """The session's agent is set to OpenAI but its answers came from the local engine (no key
    was stored): told by its usage, or, before any answer of a live session, by the key now."""
    if session.agent.provider != catalogue.PROVIDER_OPENAI:
        return False
    providers = {event.provider for event in usage if event.kind != UsageEvent.Kind.ANALYSIS}
    if providers:
        return catalogue.PROVIDER_LOCAL in providers
    return session.ended_at is None and agent_runs_on_local_fallback(agent=session.agent)


@tenant_view()
def session_recording(request: HttpRequest, session_id: int) -> HttpResponse:
    """The session's recording, streamed with byte ranges (the player seeks); ``?download=1``
    as an attachment, for owners and admins only."""
    session = tenant_object_get(Session, pk=session_id)
    recording = recordings.recording_for_session(session)
    if recording is None or recording.status != Recording.Status.READY:
        raise Http404("This session has no stored recording.")
    download = request.GET.get("download") == "1"
    if download and not request.membership.can_configure:
        return HttpResponseForbidden(
            "Only owners and admins can download recordings.", content_type="text/plain"
        )
    try:
        handle = recordings.open_recording(recording)
    except FileNotFoundError:
        raise Http404("The recording's file is missing from storage.") from None
    response = ranged_response(
        request, handle, size=recording.bytes, content_type=recording.format or "audio/ogg"
    )
    response["Cache-Control"] = "private, no-store"
    if download:
        response["Content-Disposition"] = (
            f'attachment; filename="session-{session.pk}.{recording.file_name.rsplit(".", 1)[-1]}"'
        )
    return response


@require_POST
@tenant_view(configure=True)
def session_end_ask(request: HttpRequest, session_id: int) -> HttpResponse:
    session = tenant_object_get(Session, pk=session_id)
    if session.ended_at is None:
        try:
            services.session_end_request(session=session, actor=request.user)
        except services.ControlPlaneUnavailable:
            messages.error(
                request, "The session could not be reached right now (Redis); try again shortly."
            )
        else:
            messages.success(request, "The session is being ended.")
    return redirect("session-detail", request.tenant.slug, session.pk)


@require_POST
@tenant_view(configure=True)
def session_analyze_again(request: HttpRequest, session_id: int) -> HttpResponse:
    session = tenant_object_get(Session, pk=session_id)
    if session.ended_at is None:
        messages.error(request, "A session is analysed once it has ended.")
    elif request.tenant.data_policy == DataPolicy.METADATA:
        messages.error(request, "This workspace keeps metadata only: there is no transcript.")
    else:
        run = analysis.session_analysis_rerun(session=session, actor=request.user)
        messages.success(request, f"Analysis run {run.run} queued; refresh in a moment.")
    return redirect("session-detail", request.tenant.slug, session.pk)


# --- erasure ------------------------------------------------------------------------------


def _erased_message(report: retention.ErasureReport) -> str:
    deleted = ", ".join(
        f"{name.replace('_', ' ')} {count}" for name, count in report.deleted.items()
    )
    message = f"Erased {report.sessions} session{'s' if report.sessions != 1 else ''} ({deleted})."
    if report.waiting:
        message += (
            f" {report.waiting} more still running or just ended: erase again in a few minutes."
        )
    return message


@require_POST
@tenant_view(configure=True)
def erasure_confirm(request: HttpRequest) -> HttpResponse:
    """Erase one end user: the data page's form lands here and is shown what it would erase;
    the confirmation (which carries only the hash, never the raw id again) erases."""
    form = ErasureForm(request.POST)
    plan = None
    if form.is_valid():
        try:
            plan = retention.erasure_plan(
                tenant=request.tenant,
                end_user=form.cleaned_data["end_user"] or None,
                hashed=form.cleaned_data["end_user_hash"] or None,
            )
        except retention.ErasureError as error:
            form.add_error(None, str(error))
    if plan is not None and request.POST.get("confirm") == "erase":
        report = retention.erasure_run(plan=plan, actor=request.user)
        messages.success(request, _erased_message(report))
        return redirect("data-retention", tenant_slug=request.tenant.slug)
    context = {"form": form, "plan": plan, "session": None}
    return render(request, "console/erasure_confirm.html", context, status=200 if plan else 400)


@tenant_view(configure=True)
def session_erase(request: HttpRequest, session_id: int) -> HttpResponse:
    """Erase one session's content: a confirmation page, then the erasure (POST)."""
    session = tenant_object_get(Session, pk=session_id)
    plan = retention.erasure_plan(tenant=request.tenant, session_id=session.pk)
    if request.method == "POST" and plan.session_ids:
        report = retention.erasure_run(plan=plan, actor=request.user)
        messages.success(request, _erased_message(report))
        return redirect("session-detail", request.tenant.slug, session.pk)
    context = {"plan": plan, "session": session}
    return render(request, "console/erasure_confirm.html", context)
