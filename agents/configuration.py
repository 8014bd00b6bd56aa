"""Writes for agent configuration: drafts, published versions, and an audit row for each.

The agent row is the draft: the console's form, the tools page and the REST API edit it, and
only the console's Try-it runs it. Publishing snapshots the draft as an immutable version n+1
and makes it live; every other session runs the live version (or a version a widget key, a
phone number or an API call pins). Rolling back publishes an older version again and resets
the draft to it, without rewriting history.
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


def version_config(version: AgentVersion) -> dict[str, Any]:
    """A version's configuration, a field it predates at the field's default."""
    config = version.config or {}
    return {
        name: copy.deepcopy(config.get(name, Agent._meta.get_field(name).get_default()))
        for name in VERSIONED_FIELDS
    }


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Field → (old, new) for every field that differs (secrets masked)."""
    return {
        name: (_redact(name, old.get(name)), _redact(name, new.get(name)))
        for name in VERSIONED_FIELDS
        if old.get(name) != new.get(name)
    }


def draft_changes(agent: Agent) -> dict[str, tuple[Any, Any]]:
    """What publishing the draft would change: field → (live, draft); every field when nothing
    was ever published; empty when the draft is the live version."""
    live = agent.live_version
    return config_diff(version_config(live) if live else {}, agent_config(agent))


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
    """The draft as a new version, made live."""
    version = AgentVersion.objects.create(
        tenant_id=agent.tenant_id,
        agent=agent,
        number=_next_number(agent),
        config=agent_config(agent),
        note=note[:200],
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
    """A new agent, published at once as version 1 (usable right away)."""
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
) -> dict[str, tuple[Any, Any]] | None:
    """Apply changed settings to the draft (no session but Try-it runs it until it is
    published). The changes, field → (before, after); None when nothing changed."""
    with tenant_scope(agent.tenant_id):
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        before = agent_config(locked)
        _apply(locked, fields)
        changes = config_diff(before, agent_config(locked))
        if not changes:
            return None
        locked.save()
        audit_record(
            tenant=locked.tenant, actor=actor, action="agent.updated", target=locked,
            changes={"draft": True, "fields": sorted(changes), **({"note": note} if note else {})},
        )  # fmt: skip
    for name in VERSIONED_FIELDS:  # the caller's instance shows the draft too
        setattr(agent, name, getattr(locked, name))
    return changes


def agent_publish(
    agent: Agent,
    actor: AbstractBaseUser | None,
    version: AgentVersion | int | None = None,
    *,
    note: str = "",
) -> AgentVersion:
    """Make a version live: the one entry point of the console and the REST API.

    ``version`` None publishes the draft as a new version (when the draft is already live,
    the live version is returned and nothing is written: publishing twice is harmless).
    ``version`` an older version (or its number) publishes it again (a rollback) and resets
    the draft to it. Raises ``ValidationError`` for a version of another agent or no version.
    Audited as ``agent.published`` or ``agent.rolled_back``.
    """
    with transaction.atomic(), tenant_scope(agent.tenant_id):
        locked = (
            Agent.objects.select_for_update(of=("self",))
            .select_related("live_version")
            .get(pk=agent.pk)
        )
        if version is None:
            published = _publish_draft(locked, actor=actor, note=note)
        else:
            published = _publish_version(locked, _version_of(locked, version), actor=actor)
    for name in VERSIONED_FIELDS:
        setattr(agent, name, getattr(locked, name))
    agent.live_version = published
    return published


def _version_of(agent: Agent, version: AgentVersion | int) -> AgentVersion:
    if isinstance(version, AgentVersion):
        if version.agent_id != agent.pk:
            raise ValidationError({"version": "That version belongs to another agent."})
        return version
    found = AgentVersion.objects.filter(agent=agent, number=version).first()
    if found is None:
        raise ValidationError({"version": f"This agent has no version {version}."})
    return found


def _publish_draft(agent: Agent, *, actor: AbstractBaseUser | None, note: str) -> AgentVersion:
    changes = draft_changes(agent)
    if agent.live_version is not None and not changes:
        return agent.live_version
    previous = agent.live_version.number if agent.live_version else None
    version = _snapshot(agent, actor=actor, note=note or "published")
    audit_record(
        tenant=agent.tenant, actor=actor, action="agent.published", target=agent,
        changes={"version": version.number, "from_version": previous, "fields": sorted(changes)},
    )  # fmt: skip
    return version


def _publish_version(
    agent: Agent, version: AgentVersion, *, actor: AbstractBaseUser | None
) -> AgentVersion:
    previous = agent.live_version.number if agent.live_version else None
    discarded = sorted(draft_changes(agent))  # unpublished edits the reset drops
    for name, value in version_config(version).items():
        setattr(agent, name, value)
    agent.live_version = version
    agent.save()
    audit_record(
        tenant=agent.tenant, actor=actor, action="agent.rolled_back", target=agent,
        changes={"from_version": previous, "to_version": version.number,
                 "discarded_draft_fields": discarded},
    )  # fmt: skip
    return version


def agent_rollback(*, agent: Agent, version: AgentVersion, actor: AbstractBaseUser | None) -> None:
    """Make an earlier version live again (see ``agent_publish``)."""
    agent_publish(agent, actor, version)


def agent_version_for_pin(*, agent: Agent | None, number: object) -> AgentVersion | None:
    """The version a widget key, phone number or API call pins by its number (None: empty,
    i.e. live). Raises ``ValidationError`` for a number the agent does not have."""
    if number in (None, ""):
        return None
    if agent is None:
        raise ValidationError({"version": "Choose an agent to pin one of its versions."})
    try:
        wanted = int(number)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValidationError({"version": "A version is a number, e.g. 3."}) from None
    with tenant_scope(agent.tenant_id):
        found = AgentVersion.objects.filter(agent=agent, number=wanted).first()
    if found is None:
        raise ValidationError({"version": f"{agent.name} has no version {wanted}."})
    return found


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
) -> dict[str, tuple[Any, Any]] | None:
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
) -> dict[str, tuple[Any, Any]] | None:
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
    *, agent: Agent, version: AgentVersion | None, actor: AbstractBaseUser | None, note: str = ""
) -> AgentVersion:
    """The REST API's publish: ``version`` None publishes the draft, a version publishes it
    again (a rollback). See ``agent_publish``."""
    return agent_publish(agent, actor, version, note=note)
