"""Reads for the realtime path."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from django.conf import settings

from agents import catalogue
from agents.models import Agent
from agents.realtime import outbound
from agents.realtime.policy import SessionPolicy, builtin_tools
from agents.realtime.variables import template_fill, variables_collect
from tenants import crypto
from tenants.models import DataPolicy, ProviderCredential, Tenant
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

# How long a session start may spend resolving its MCP servers' names (side by side).
MCP_CHECK_TIMEOUT_S = 2.0


def _mcp_server_for_upstream(server: dict) -> dict:
    decrypted = dict(server)
    encrypted = decrypted.pop("authorization_encrypted", "")
    if encrypted:
        decrypted["authorization"] = crypto.decrypt(encrypted)
    return decrypted


def mcp_servers_reachable(*, agent: Agent) -> list[dict]:
    """The agent's MCP servers whose URL passes the outbound checks now (see
    ``configuration.mcp_url_problem``); the others are left out of the session with a warning,
    so a name re-pointed at a private address since it was saved never reaches the upstream."""
    servers = list(agent.mcp_servers or ())
    if not servers:
        return []
    problems = outbound.urls_check_blocking(
        [str(server.get("url") or "") for server in servers],
        allow_private=settings.VP_ALLOW_PRIVATE_WEBHOOKS,
        require_https=True,
        timeout=MCP_CHECK_TIMEOUT_S,
    )
    kept = []
    for server, problem in zip(servers, problems, strict=True):
        if problem is None:
            kept.append(server)
            continue
        logger.warning(
            "MCP server %r of agent %s (tenant %s, host %s) left out of the session: %s: %s",
            server.get("label"), agent.pk, agent.tenant_id,
            urlsplit(str(server.get("url") or "")).hostname, problem.kind, problem.message,
        )  # fmt: skip
    return kept


def policy_for_agent(
    *, agent: Agent, channel: str, variables: Mapping[str, object] | None = None
) -> SessionPolicy:
    """Freeze the agent's configuration for one session (MCP authorization decrypted here,
    MCP servers whose URL now resolves to a denied address left out).

    ``variables``: the prompt variable values this session was opened with (only the agent's
    declared names are taken; the others keep the admin's defaults)."""
    defaults = agent_variable_defaults(agent)
    values = variables_collect(variables, allowed=defaults)
    return SessionPolicy(
        agent_id=agent.pk,
        kind=agent.kind,
        model=agent.model,
        channel=channel,
        voice=agent.voice,
        instructions=template_fill(agent.instructions, values=values, defaults=defaults),
        reasoning_effort=agent.reasoning_effort,
        turn_detection=agent.turn_detection,
        vad_eagerness=agent.vad_eagerness,
        input_audio_format=agent.input_audio_format,
        output_audio_format=agent.output_audio_format,
        max_output_tokens=agent.max_output_tokens,
        target_language=agent.target_language,
        tools=tuple(agent.tools or ())
        + builtin_tools(
            end_call=agent.end_call_enabled,
            transfer_call=agent.transfer_call_enabled and bool(agent.transfer_number),
            channel=channel,
        ),
        mcp_servers=tuple(
            _mcp_server_for_upstream(server) for server in mcp_servers_reachable(agent=agent)
        ),
        tool_preambles=agent.tool_preambles,
        recording=recording_enabled_for(agent),
        recording_notice=agent.recording_notice,
        speaks_first=agent.speaks_first == "agent",
        first_message=template_fill(agent.first_message, values=values, defaults=defaults),
        transfer_number=agent.transfer_number if agent.transfer_call_enabled else "",
    )


def agent_variable_defaults(agent: Agent) -> dict[str, str]:
    """The agent's declared prompt variables, name → default (a bad stored shape: none)."""
    declared = agent.variables if isinstance(agent.variables, dict) else {}
    return {str(name): str(default or "") for name, default in declared.items()}


def agent_runs_on_local_fallback(*, agent: Agent) -> bool:
    """The console's warning: ``local_engine_fallback`` now, without decrypting a key."""
    if agent.provider != catalogue.PROVIDER_OPENAI or settings.OPENAI_API_KEY:
        return False
    with tenant_scope(agent.tenant_id):
        return not ProviderCredential.objects.filter(provider="openai").exists()


def local_engine_fallback(*, agent: Agent, api_key: str) -> bool:
    """An agent set to OpenAI that runs on the local engine because no key is stored (the
    console warns: the local engine only answers "You said: …")."""
    return agent.provider == catalogue.PROVIDER_OPENAI and not api_key


def recording_enabled_for(agent: Agent) -> bool:
    """Whether the agent's sessions are recorded: never under the data policy "metadata only"
    (no consent notice is shown for a recording that would not be kept), else the tenant's
    recording policy, else the agent's own setting."""
    if agent.tenant.data_policy == DataPolicy.METADATA:
        return False
    policy = agent.tenant.recording_policy
    if policy == Tenant.RecordingPolicy.ALWAYS:
        return True
    if policy == Tenant.RecordingPolicy.NEVER:
        return False
    return bool(agent.recording_enabled)
