"""Writes for agent configuration: every change makes an immutable version and an audit row.

An agent row holds the configuration sessions run with (the live version's). Saving creates
version n+1 and makes it live; rolling back makes an older version live again by copying its
configuration back, without rewriting history.
"""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from jsonschema import SchemaError
from jsonschema.validators import validator_for

from agents import catalogue
from agents.models import VERSIONED_FIELDS, Agent, AgentVersion
from agents.realtime import outbound
from tenants import crypto
from tenants.audit import audit_record
from tenants.models import Tenant
from tenants.scoping import tenant_scope

TOOL_EXECUTIONS = ("webhook", "client")


def agent_config(agent: Agent) -> dict[str, Any]:
    return {name: copy.deepcopy(getattr(agent, name)) for name in VERSIONED_FIELDS}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Field → (old, new) for every field that differs (secrets masked)."""
    return {
        name: (_redact(name, old.get(name)), _redact(name, new.get(name)))
        for name in VERSIONED_FIELDS
        if old.get(name) != new.get(name)
    }


def _redact(name: str, value: Any) -> Any:
    if name == "mcp_servers" and isinstance(value, list):
        return [
            {k: ("•••" if k == "authorization_encrypted" else v) for k, v in server.items()}
            for server in value
        ]
    return value


def _next_number(agent: Agent) -> int:
    last = AgentVersion.objects.filter(agent=agent).aggregate(last=Max("number"))["last"]
    return (last or 0) + 1


def _snapshot(agent: Agent, *, actor: AbstractBaseUser | None, note: str) -> AgentVersion:
    version = AgentVersion.objects.create(
        tenant_id=agent.tenant_id,
        agent=agent,
        number=_next_number(agent),
        config=agent_config(agent),
        note=note,
        created_by=actor if actor and actor.is_authenticated else None,
    )
    agent.live_version = version
    agent.save(update_fields=["live_version", "updated_at"])
    return version


def _apply(agent: Agent, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if name not in VERSIONED_FIELDS:
            raise ValueError(f"{name} is not an agent setting")
        setattr(agent, name, value)
    agent.full_clean(exclude=["tenant", "live_version"])


@transaction.atomic
def agent_create(
    *, tenant: Tenant, actor: AbstractBaseUser | None, fields: dict[str, Any]
) -> Agent:
    with tenant_scope(tenant):
        agent = Agent(tenant=tenant)
        _apply(agent, fields)
        agent.save()
        version = _snapshot(agent, actor=actor, note="created")
        audit_record(
            tenant=tenant, actor=actor, action="agent.created", target=agent,
            changes={"version": version.number},
        )  # fmt: skip
    return agent


@transaction.atomic
def agent_update(
    *, agent: Agent, actor: AbstractBaseUser | None, fields: dict[str, Any], note: str = ""
) -> AgentVersion | None:
    """Apply changed settings as a new live version; None when nothing changed."""
    with tenant_scope(agent.tenant_id):
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        before = agent_config(agent)
        _apply(agent, fields)
        changes = config_diff(before, agent_config(agent))
        if not changes:
            return None
        agent.save()
        version = _snapshot(agent, actor=actor, note=note or "edited")
        audit_record(
            tenant=agent.tenant, actor=actor, action="agent.updated", target=agent,
            changes={"version": version.number, "fields": sorted(changes)},
        )  # fmt: skip
    return version


@transaction.atomic
def agent_rollback(*, agent: Agent, version: AgentVersion, actor: AbstractBaseUser | None) -> None:
    """Make an earlier version live again (its configuration is copied back to the agent)."""
    if version.agent_id != agent.pk:
        raise ValidationError("that version belongs to another agent")
    with tenant_scope(agent.tenant_id):
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        previous = agent.live_version_id
        _apply(agent, copy.deepcopy(version.config))
        agent.live_version = version
        agent.save()
        audit_record(
            tenant=agent.tenant, actor=actor, action="agent.rolled_back", target=agent,
            changes={"from_version_id": previous, "to_version": version.number},
        )  # fmt: skip


def agent_duplicate(*, agent: Agent, actor: AbstractBaseUser | None) -> Agent:
    fields = agent_config(agent)
    fields["name"] = f"{agent.name} (copy)"[:100]
    return agent_create(tenant=agent.tenant, actor=actor, fields=fields)


@transaction.atomic
def agent_set_status(*, agent: Agent, actor: AbstractBaseUser | None, status: str) -> None:
    with tenant_scope(agent.tenant_id):
        agent.status = status
        agent.save(update_fields=["status", "updated_at"])
        audit_record(
            tenant=agent.tenant, actor=actor,
            action="agent.archived" if status == Agent.Status.ARCHIVED else "agent.restored",
            target=agent,
        )  # fmt: skip


# --- tools ------------------------------------------------------------------------------


def function_tool_clean(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate a function tool definition (parameters must be a valid JSON Schema)."""
    name = str(raw.get("name") or "").strip()
    if not name or not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
        raise ValidationError({"name": "Use letters, digits, _ or -, at most 64 characters."})
    parameters = raw.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise ValidationError({"parameters": "Parameters must be a JSON object (a JSON Schema)."})
    try:
        validator_for(parameters).check_schema(parameters)
    except SchemaError as error:
        raise ValidationError({"parameters": f"Not a valid JSON Schema: {error.message}"}) from None
    if parameters.get("type") != "object":
        raise ValidationError({"parameters": 'The schema\'s top level must be {"type": "object"}.'})
    execution = raw.get("execution") or "webhook"
    if execution not in TOOL_EXECUTIONS:
        raise ValidationError({"execution": "Choose webhook or client."})
    tool = {
        "name": name,
        "description": str(raw.get("description") or "")[:1000],
        "parameters": parameters,
        "execution": execution,
        "timeout_seconds": float(raw.get("timeout_seconds") or 10),
        "filler_phrase": str(raw.get("filler_phrase") or "")[:200],
    }
    if not 0.5 <= tool["timeout_seconds"] <= 60:
        raise ValidationError({"timeout_seconds": "Between 0.5 and 60 seconds."})
    if execution == "webhook":
        url = str(raw.get("webhook_url") or "").strip()
        if not url.startswith(("https://", "http://")):
            raise ValidationError({"webhook_url": "A webhook tool needs an http(s) URL."})
        tool["webhook_url"] = url
    return tool


def agent_tool_save(
    *, agent: Agent, actor: AbstractBaseUser | None, tool: dict[str, Any], replace: str = ""
) -> AgentVersion | None:
    """Add a function tool, or replace the tool named ``replace``."""
    clean = function_tool_clean(tool)
    tools = [existing for existing in agent.tools if existing.get("name") != (replace or None)]
    if any(existing.get("name") == clean["name"] for existing in tools):
        raise ValidationError({"name": f"A tool named {clean['name']} already exists."})
    position = next(
        (index for index, existing in enumerate(agent.tools) if existing.get("name") == replace),
        len(tools),
    )
    tools.insert(position, clean)
    return agent_update(
        agent=agent, actor=actor, fields={"tools": tools}, note=f"tool {clean['name']}"
    )


def agent_tool_delete(*, agent: Agent, actor: AbstractBaseUser | None, name: str) -> None:
    tools = [tool for tool in agent.tools if tool.get("name") != name]
    agent_update(agent=agent, actor=actor, fields={"tools": tools}, note=f"removed tool {name}")


def mcp_server_clean(raw: dict[str, Any]) -> dict[str, Any]:
    label = str(raw.get("label") or "").strip()
    if not label or not label.replace("_", "").replace("-", "").isalnum():
        raise ValidationError({"label": "Use letters, digits, _ or -."})
    url = str(raw.get("url") or "").strip()
    problem = mcp_url_problem(url)
    if problem:
        raise ValidationError({"url": problem})
    allowed = [name.strip() for name in raw.get("allowed_tools") or [] if name.strip()]
    server: dict[str, Any] = {"label": label, "url": url, "allowed_tools": allowed}
    authorization = str(raw.get("authorization") or "").strip()
    if authorization:
        server["authorization_encrypted"] = crypto.encrypt(authorization)
        server["authorization_masked"] = crypto.mask(authorization)
    return server


def mcp_url_problem(url: str) -> str:
    """Why an MCP server URL may not be saved ("" when it may).

    The upstream calls the server itself, so the URL must be https and every address its name
    resolves to now must be public (the outbound deny list); with VP_ALLOW_PRIVATE_WEBHOOKS
    (embedded mode) private addresses are accepted for local testing. Sessions check
    again when they start (``agents.selectors``), since a name can later point elsewhere.
    """
    error = outbound.urls_check_blocking(
        [url], allow_private=settings.VP_ALLOW_PRIVATE_WEBHOOKS, require_https=True
    )[0]
    if error is None:
        return ""
    if error.kind == "invalid_url":
        if "must start with" in error.message:
            return "A remote MCP server needs an https:// URL."
        return f"This URL is not valid: {error.message}."
    if error.kind == "forbidden_address":
        return (
            f"This URL points at a private, local or reserved address ({error.message}). "
            "A remote MCP server must be reachable on the public internet."
        )
    return f"This URL's host could not be resolved ({error.message}). Check the address."


def agent_mcp_server_add(
    *, agent: Agent, actor: AbstractBaseUser | None, server: dict[str, Any]
) -> AgentVersion | None:
    clean = mcp_server_clean(server)
    if any(existing.get("label") == clean["label"] for existing in agent.mcp_servers):
        raise ValidationError({"label": f"A server labelled {clean['label']} already exists."})
    return agent_update(
        agent=agent, actor=actor, fields={"mcp_servers": [*agent.mcp_servers, clean]},
        note=f"MCP server {clean['label']}",
    )  # fmt: skip


def agent_mcp_server_delete(*, agent: Agent, actor: AbstractBaseUser | None, label: str) -> None:
    servers = [server for server in agent.mcp_servers if server.get("label") != label]
    agent_update(
        agent=agent, actor=actor, fields={"mcp_servers": servers}, note=f"removed MCP {label}"
    )


def default_fields_for_kind(kind: str) -> dict[str, Any]:
    return {"model": catalogue.MODELS_BY_KIND[kind][0]}


def agent_version_publish(
    *, agent: Agent, version: AgentVersion, actor: AbstractBaseUser | None
) -> None:
    """Make ``version`` the one sessions run with (the REST API's "publish").

    Until agents have drafts this is a roll back (or forward) to that version; the one place
    to change when publishing a draft becomes its own step.
    """
    agent_rollback(agent=agent, version=version, actor=actor)
