"""The conformance suite's platform: one real server process per test session, with the agents
the suite talks to (a voice agent, one with a client-executed tool, a transcription agent and a
translation agent), each behind its own API key so that every client uses OpenAI's own URLs."""

from __future__ import annotations

import json

import pytest

from tests.servers import DEFAULT_SERVER, SERVERS, Platform, base_environ
from tests.spoken import spoken

# Agents created next to the demo tenant's voice agent; each gets an API key whose default
# agent it is (so a client needs no platform-specific query parameter).
SETUP = r"""
import json
from agents.configuration import agent_create
from agents.models import Agent
from tenants import services
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

LOOKUP_ORDER = {
    "name": "lookup_order",
    "description": "Look up an order by its number",
    "execution": "client",
    "timeout_seconds": 30,
    "parameters": {
        "type": "object",
        "properties": {"order_number": {"type": "string"}},
        "required": ["order_number"],
    },
}
AGENTS = {
    "tools": {"name": "Orders (client tool)", "kind": "voice_agent", "provider": "local",
              "model": "gpt-realtime-2", "voice": "marin", "tools": [LOOKUP_ORDER],
              "instructions": "You help with orders."},
    "transcription": {"name": "Transcriber", "kind": "transcription", "provider": "local",
                      "model": "gpt-realtime-whisper"},
    "translation": {"name": "Translator", "kind": "translation", "provider": "local",
                    "model": "gpt-realtime-translate", "target_language": "fr"},
}
with scopes_disabled():
    tenant = Tenant.objects.get(slug="demo")
out = {}
with tenant_scope(tenant):
    for role, fields in AGENTS.items():
        agent = Agent.objects.filter(name=fields["name"]).first() or agent_create(
            tenant=tenant, actor=None, fields=fields
        )
        _, raw_key = services.api_key_issue(
            tenant=tenant, name=f"conformance {role}", default_agent=agent
        )
        out[role] = {"agent_id": agent.pk, "api_key": raw_key}
print(json.dumps(out))
"""


class Conformance:
    """A running platform and the keys of its agents."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        agents = json.loads(platform.shell(SETUP).splitlines()[-1])
        self.keys = {role: entry["api_key"] for role, entry in agents.items()}
        self.keys["voice"] = platform.seed["api_key"]
        self.agent_ids = {role: entry["agent_id"] for role, entry in agents.items()}
        self.agent_ids["voice"] = platform.seed["agent_id"]

    @property
    def ws_base(self) -> str:
        """The ``websocket_base_url`` an OpenAI client is given (``…/v1``)."""
        return f"{self.platform.ws_url}/v1"

    @property
    def http_base(self) -> str:
        return f"{self.platform.http_url}/v1"


def _serve(tmp_path_factory, server: str):
    tmp_path = tmp_path_factory.mktemp(f"conformance-{server}")
    platform = Platform(base_environ(tmp_path), tmp_path, server=server)
    try:
        yield Conformance(platform)
    finally:
        platform.stop()


@pytest.fixture(scope="session")
def daphne(tmp_path_factory):
    """The platform under a real Daphne process (embedded mode, local engine upstream)."""
    yield from _serve(tmp_path_factory, "daphne")


@pytest.fixture(scope="session")
def uvicorn(tmp_path_factory):
    """The same platform under uvicorn, production's server (the close tests run under both)."""
    yield from _serve(tmp_path_factory, "uvicorn")


@pytest.fixture(scope="session")
def served(request):
    """The platform under the production server (voiceplatform.serve's default)."""
    return request.getfixturevalue(DEFAULT_SERVER)


@pytest.fixture(params=SERVERS)
def any_server(request):
    """Each server in turn (for tests that must hold under both)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def utterance_pcm() -> bytes:
    """0.5 s of silence, "what is the status of my order" spoken by eSpeak NG (en-us, PCM16
    24 kHz), 1 s of silence: one full turn for server VAD."""
    from agents.realtime import audio

    utterance = spoken(UTTERANCE, rate_hz=24000, voice="en-us")
    return audio.silence(500) + utterance + audio.silence(1000)


UTTERANCE = "what is the status of my order"
