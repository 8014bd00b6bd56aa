"""Reads for the realtime path."""

from __future__ import annotations

from agents.models import Agent
from agents.realtime.policy import SessionPolicy
from tenants import crypto


def _mcp_server_for_upstream(server: dict) -> dict:
    decrypted = dict(server)
    encrypted = decrypted.pop("authorization_encrypted", "")
    if encrypted:
        decrypted["authorization"] = crypto.decrypt(encrypted)
    return decrypted


def policy_for_agent(*, agent: Agent, channel: str) -> SessionPolicy:
    """Freeze the agent's configuration for one session (MCP authorization decrypted here)."""
    return SessionPolicy(
        agent_id=agent.pk,
        kind=agent.kind,
        model=agent.model,
        channel=channel,
        voice=agent.voice,
        instructions=agent.instructions,
        reasoning_effort=agent.reasoning_effort,
        turn_detection=agent.turn_detection,
        vad_eagerness=agent.vad_eagerness,
        input_audio_format=agent.input_audio_format,
        output_audio_format=agent.output_audio_format,
        max_output_tokens=agent.max_output_tokens,
        target_language=agent.target_language,
        tools=tuple(agent.tools or ()),
        mcp_servers=tuple(_mcp_server_for_upstream(server) for server in agent.mcp_servers or ()),
        tool_preambles=agent.tool_preambles,
    )
