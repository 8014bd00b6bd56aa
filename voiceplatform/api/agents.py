"""Agents, their versions (and diffs), tools, MCP servers; widget keys."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Router, Status

from agents import catalogue
from agents.configuration import (
    agent_create,
    agent_mcp_server_add,
    agent_mcp_server_delete,
    agent_set_status,
    agent_tool_delete,
    agent_tool_save,
    agent_update,
    agent_version_publish,
    config_diff,
    default_fields_for_kind,
    draft_changes,
)
from agents.models import VERSIONED_FIELDS, Agent, AgentVersion
from tenants import services as tenant_services
from tenants.models import WidgetKey
from tenants.origins import InvalidOrigin
from tenants.scoping import tenant_scope
from voiceplatform.api import schemas
from voiceplatform.api.auth import READ, WRITE, caller
from voiceplatform.api.errors import ApiError, from_django_validation, not_found
from voiceplatform.api.responses import answers

router = Router(auth=READ, tags=["agents"])
widget_router = Router(auth=READ, tags=["widget keys"])


def _mcp_out(server: dict[str, Any]) -> dict[str, Any]:
    return {
        "label": server.get("label", ""),
        "url": server.get("url", ""),
        "allowed_tools": server.get("allowed_tools", []),
        "authorization_masked": server.get("authorization_masked"),
    }


def _config_out(config: dict[str, Any]) -> dict[str, Any]:
    """A version's configuration as a client may see it (MCP credentials never leave)."""
    out = dict(config)
    out["mcp_servers"] = [_mcp_out(server) for server in config.get("mcp_servers") or []]
    return out


def agent_out(agent: Agent) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(agent, name) for name in VERSIONED_FIELDS}
    out["mcp_servers"] = [_mcp_out(server) for server in agent.mcp_servers]
    out.update(
        id=agent.pk,
        status=agent.status,
        live_version=agent.live_version.number if agent.live_version else None,
        unpublished_changes=sorted(draft_changes(agent)),
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )
    return out


def agent_get(tenant_id: int, agent_id: int) -> Agent:
    """The caller's tenant's agent (inside its scope), or a 404 that says nothing more."""
    with tenant_scope(tenant_id):
        agent = Agent.objects.select_related("live_version", "tenant").filter(pk=agent_id).first()
    if agent is None:
        raise not_found("agent")
    return agent


def _version_get(agent: Agent, number: int) -> AgentVersion:
    with tenant_scope(agent.tenant_id):
        version = AgentVersion.objects.filter(agent=agent, number=number).first()
    if version is None:
        raise not_found("version")
    return version


def _settings(payload: schemas.AgentSettings) -> dict[str, Any]:
    fields = payload.model_dump(exclude_unset=True, exclude={"note", "publish"})
    for name, value in list(fields.items()):
        if value is None and name != "max_output_tokens":
            raise ApiError(400, "invalid_value", f"{name} may not be null.", param=name)
    return fields


def _refresh(agent: Agent) -> dict[str, Any]:
    return agent_out(agent_get(agent.tenant_id, agent.pk))


@router.get("/agents", response=answers(schemas.AgentList), summary="List agents")
def agents_list(request: HttpRequest, status: schemas.AgentStatus | None = None) -> dict[str, Any]:
    """The tenant's agents by name; ``status``: active or archived (default: both)."""
    api_key = caller(request)
    with tenant_scope(api_key.tenant_id):
        agents = Agent.objects.select_related("live_version").order_by("name", "pk")
        if status:
            if status not in Agent.Status.values:
                raise ApiError(400, "invalid_value", "status: active or archived", param="status")
            agents = agents.filter(status=status)
        return {"data": [agent_out(agent) for agent in agents]}


@router.post(
    "/agents", response=answers(schemas.AgentOut, status=201), auth=WRITE, summary="Create"
)
def agents_create(request: HttpRequest, payload: schemas.AgentCreate) -> Status:
    """A new agent (version 1, live). Omitted settings take their defaults."""
    api_key = caller(request)
    fields = _settings(payload)
    if "kind" in fields and "model" not in fields:
        if fields["kind"] not in catalogue.MODELS_BY_KIND:
            raise ApiError(400, "invalid_value", "kind: not a known kind", param="kind")
        fields.update(default_fields_for_kind(fields["kind"]))
    try:
        agent = agent_create(tenant=api_key.tenant, actor=None, fields=fields)
    except ValidationError as error:
        raise from_django_validation(error) from None
    return Status(201, _refresh(agent))


@router.get("/agents/{agent_id}", response=answers(schemas.AgentOut), summary="Read an agent")
def agents_read(request: HttpRequest, agent_id: int) -> dict[str, Any]:
    return agent_out(agent_get(caller(request).tenant_id, agent_id))


@router.patch(
    "/agents/{agent_id}", response=answers(schemas.AgentOut), auth=WRITE, summary="Update"
)
def agents_update(
    request: HttpRequest, agent_id: int, payload: schemas.AgentUpdate
) -> dict[str, Any]:
    """Change the draft (Try-it runs it; sessions keep the live version). With
    ``"publish": true`` the draft is published at once as a new version."""
    agent = agent_get(caller(request).tenant_id, agent_id)
    try:
        agent_update(agent=agent, actor=None, fields=_settings(payload), note=payload.note)
        if payload.publish:
            agent_version_publish(agent=agent, version=None, actor=None, note=payload.note)
    except ValidationError as error:
        raise from_django_validation(error) from None
    return _refresh(agent)


@router.post(
    "/agents/{agent_id}/publish", response=answers(schemas.AgentOut), auth=WRITE,
    summary="Publish the draft",
)  # fmt: skip
def agents_publish(
    request: HttpRequest, agent_id: int, payload: schemas.AgentPublish
) -> dict[str, Any]:
    """The draft becomes a new version, live for new sessions (nothing changes when the draft
    is the live version already)."""
    agent = agent_get(caller(request).tenant_id, agent_id)
    try:
        agent_version_publish(agent=agent, version=None, actor=None, note=payload.note)
    except ValidationError as error:
        raise from_django_validation(error) from None
    return _refresh(agent)


@router.post(
    "/agents/{agent_id}/archive", response=answers(schemas.AgentOut), auth=WRITE,
    summary="Archive an agent",
)  # fmt: skip
def agents_archive(request: HttpRequest, agent_id: int) -> dict[str, Any]:
    """New sessions are refused; its history stays."""
    agent = agent_get(caller(request).tenant_id, agent_id)
    if agent.status != Agent.Status.ARCHIVED:
        agent_set_status(agent=agent, actor=None, status=Agent.Status.ARCHIVED)
    return _refresh(agent)


@router.post(
    "/agents/{agent_id}/restore", response=answers(schemas.AgentOut), auth=WRITE,
    summary="Restore an archived agent",
)  # fmt: skip
def agents_restore(request: HttpRequest, agent_id: int) -> dict[str, Any]:
    agent = agent_get(caller(request).tenant_id, agent_id)
    if agent.status != Agent.Status.ACTIVE:
        agent_set_status(agent=agent, actor=None, status=Agent.Status.ACTIVE)
    return _refresh(agent)


def _version_out(version: AgentVersion, agent: Agent) -> dict[str, Any]:
    return {
        "number": version.number,
        "note": version.note,
        "live": version.pk == agent.live_version_id,
        "created_at": version.created_at,
        "config": _config_out(version.config),
    }


@router.get(
    "/agents/{agent_id}/versions", response=answers(schemas.VersionList), summary="Versions"
)
def versions_list(request: HttpRequest, agent_id: int) -> dict[str, Any]:
    """Newest first."""
    agent = agent_get(caller(request).tenant_id, agent_id)
    with tenant_scope(agent.tenant_id):
        versions = list(AgentVersion.objects.filter(agent=agent).order_by("-number"))
    return {"data": [_version_out(version, agent) for version in versions]}


@router.get(
    "/agents/{agent_id}/versions/{number}",
    response=answers(schemas.VersionOut),
    summary="Read a version",
)
def versions_read(request: HttpRequest, agent_id: int, number: int) -> dict[str, Any]:
    agent = agent_get(caller(request).tenant_id, agent_id)
    return _version_out(_version_get(agent, number), agent)


@router.get(
    "/agents/{agent_id}/versions/{number}/diff",
    response=answers(schemas.VersionDiff),
    summary="Diff a version",
)
def versions_diff(
    request: HttpRequest, agent_id: int, number: int, against: int | None = None
) -> dict[str, Any]:
    """What ``number`` changed: field, before and after, against ``against`` (default: the
    version before it; version 1 is compared with an empty agent)."""
    agent = agent_get(caller(request).tenant_id, agent_id)
    version = _version_get(agent, number)
    base_number = against if against is not None else number - 1
    if against is not None or base_number >= 1:
        base: dict[str, Any] = _version_get(agent, base_number).config
        from_version: int | None = base_number
    else:
        base, from_version = {}, None
    changes = config_diff(_config_out(base) if base else {}, _config_out(version.config))
    return {
        "agent_id": agent.pk,
        "from_version": from_version,
        "to_version": version.number,
        "changes": [
            {"field": name, "before": before, "after": after}
            for name, (before, after) in changes.items()
        ],
    }


@router.post(
    "/agents/{agent_id}/versions/{number}/publish",
    response=answers(schemas.AgentOut),
    auth=WRITE,
    summary="Publish a version",
)
def versions_publish(request: HttpRequest, agent_id: int, number: int) -> dict[str, Any]:
    """Make this version the live one again (new sessions run with it; the draft is reset to it)."""
    agent = agent_get(caller(request).tenant_id, agent_id)
    version = _version_get(agent, number)
    try:
        agent_version_publish(agent=agent, version=version, actor=None)
    except ValidationError as error:
        raise from_django_validation(error) from None
    return _refresh(agent)


# --- tools and MCP servers -------------------------------------------------------------


@router.get("/agents/{agent_id}/tools", response=answers(schemas.ToolList), summary="Tools")
def tools_list(request: HttpRequest, agent_id: int) -> dict[str, Any]:
    return {"data": agent_get(caller(request).tenant_id, agent_id).tools}


@router.post(
    "/agents/{agent_id}/tools",
    response=answers(schemas.ToolOut, status=201),
    auth=WRITE,
    summary="Add a tool",
)
def tools_add(request: HttpRequest, agent_id: int, payload: schemas.ToolIn) -> Status:
    """Add a function tool to the draft (live once published)."""
    agent = agent_get(caller(request).tenant_id, agent_id)
    try:
        agent_tool_save(agent=agent, actor=None, tool=payload.model_dump())
    except ValidationError as error:
        raise from_django_validation(error) from None
    saved = agent_get(agent.tenant_id, agent.pk)
    return Status(201, next(tool for tool in saved.tools if tool["name"] == payload.name.strip()))


@router.put(
    "/agents/{agent_id}/tools/{name}",
    response=answers(schemas.ToolOut),
    auth=WRITE,
    summary="Replace a tool",
)
def tools_replace(
    request: HttpRequest, agent_id: int, name: str, payload: schemas.ToolIn
) -> dict[str, Any]:
    agent = agent_get(caller(request).tenant_id, agent_id)
    if not any(tool.get("name") == name for tool in agent.tools):
        raise not_found("tool")
    try:
        agent_tool_save(agent=agent, actor=None, tool=payload.model_dump(), replace=name)
    except ValidationError as error:
        raise from_django_validation(error) from None
    saved = agent_get(agent.tenant_id, agent.pk)
    return next(tool for tool in saved.tools if tool["name"] == payload.name.strip())


@router.delete(
    "/agents/{agent_id}/tools/{name}",
    response=answers(None, status=204),
    auth=WRITE,
    summary="Remove a tool",
)
def tools_delete(request: HttpRequest, agent_id: int, name: str) -> Status:
    agent = agent_get(caller(request).tenant_id, agent_id)
    if not any(tool.get("name") == name for tool in agent.tools):
        raise not_found("tool")
    agent_tool_delete(agent=agent, actor=None, name=name)
    return Status(204, None)


@router.get(
    "/agents/{agent_id}/mcp_servers",
    response=answers(schemas.McpServerList),
    summary="MCP servers",
)
def mcp_servers_list(request: HttpRequest, agent_id: int) -> dict[str, Any]:
    agent = agent_get(caller(request).tenant_id, agent_id)
    return {"data": [_mcp_out(server) for server in agent.mcp_servers]}


@router.post(
    "/agents/{agent_id}/mcp_servers",
    response=answers(schemas.McpServerOut, status=201),
    auth=WRITE,
    summary="Add an MCP server",
)
def mcp_servers_add(request: HttpRequest, agent_id: int, payload: schemas.McpServerIn) -> Status:
    agent = agent_get(caller(request).tenant_id, agent_id)
    try:
        agent_mcp_server_add(agent=agent, actor=None, server=payload.model_dump())
    except ValidationError as error:
        raise from_django_validation(error) from None
    saved = agent_get(agent.tenant_id, agent.pk)
    label = payload.label.strip()
    return Status(201, _mcp_out(next(s for s in saved.mcp_servers if s["label"] == label)))


@router.delete(
    "/agents/{agent_id}/mcp_servers/{label}",
    response=answers(None, status=204),
    auth=WRITE,
    summary="Remove an MCP server",
)
def mcp_servers_delete(request: HttpRequest, agent_id: int, label: str) -> Status:
    agent = agent_get(caller(request).tenant_id, agent_id)
    if not any(server.get("label") == label for server in agent.mcp_servers):
        raise not_found("mcp_server")
    agent_mcp_server_delete(agent=agent, actor=None, label=label)
    return Status(204, None)


# --- widget keys ------------------------------------------------------------------------


def _widget_key_out(widget_key: WidgetKey) -> dict[str, Any]:
    return {
        "id": widget_key.pk,
        "name": widget_key.name,
        "key": widget_key.key,
        "agent": widget_key.agent_id,
        "allowed_origins": widget_key.allowed_origins,
        "active": widget_key.is_active,
        "created_at": widget_key.created_at,
        "revoked_at": widget_key.revoked_at,
    }


@widget_router.get("/widget_keys", response=answers(schemas.WidgetKeyList), summary="List")
def widget_keys_list(request: HttpRequest) -> dict[str, Any]:
    with tenant_scope(caller(request).tenant_id):
        keys = list(WidgetKey.objects.order_by("-created_at", "-pk"))
    return {"data": [_widget_key_out(widget_key) for widget_key in keys]}


@widget_router.post(
    "/widget_keys",
    response=answers(schemas.WidgetKeyOut, status=201),
    auth=WRITE,
    summary="Create a widget key",
)
def widget_keys_create(request: HttpRequest, payload: schemas.WidgetKeyIn) -> Status:
    """A publishable key for the embeddable widget, usable only from ``allowed_origins``."""
    api_key = caller(request)
    agent = agent_get(api_key.tenant_id, payload.agent) if payload.agent is not None else None
    if agent is not None and agent.status != Agent.Status.ACTIVE:
        raise ApiError(400, "agent_archived", "agent: that agent is archived.", param="agent")
    try:
        widget_key = tenant_services.widget_key_create(
            tenant=api_key.tenant, name=payload.name, allowed_origins=payload.allowed_origins,
            agent=agent,
        )  # fmt: skip
    except InvalidOrigin as error:
        raise ApiError(
            400, "invalid_origin", f"allowed_origins: {error}", param="allowed_origins"
        ) from None
    return Status(201, _widget_key_out(widget_key))


@widget_router.get(
    "/widget_keys/{widget_key_id}", response=answers(schemas.WidgetKeyOut), summary="Read"
)
def widget_keys_read(request: HttpRequest, widget_key_id: int) -> dict[str, Any]:
    return _widget_key_out(_widget_key_get(caller(request).tenant_id, widget_key_id))


def _widget_key_get(tenant_id: int, widget_key_id: int) -> WidgetKey:
    with tenant_scope(tenant_id):
        widget_key = WidgetKey.objects.filter(pk=widget_key_id).first()
    if widget_key is None:
        raise not_found("widget_key")
    return widget_key


@widget_router.post(
    "/widget_keys/{widget_key_id}/revoke",
    response=answers(schemas.WidgetKeyOut),
    auth=WRITE,
    summary="Revoke a widget key",
)
def widget_keys_revoke(request: HttpRequest, widget_key_id: int) -> dict[str, Any]:
    """The key stops working at once; live widget sessions that came in with it end."""
    widget_key = _widget_key_get(caller(request).tenant_id, widget_key_id)
    tenant_services.widget_key_revoke(widget_key=widget_key)
    return _widget_key_out(widget_key)
