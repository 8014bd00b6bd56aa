"""Fixtures for the local realtime engine tests (no Django needed)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from openai.types.realtime import RealtimeServerEvent  # noqa: E402

from agents.realtime import audio, speech  # noqa: E402
from tests.spoken import spoken  # noqa: E402

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
UTTERANCE = "what is the status of my order"


def validate_event(raw: str) -> dict[str, Any]:
    """Parse a server event and validate it against the SDK's models (raises on mismatch)."""
    event = json.loads(raw)
    model = SERVER_EVENT.validate_python(event)
    assert model.type == event["type"]
    return event


class Client:
    """Test driver around a LocalConnection (or any send/recv connection)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []

    async def send(self, **event: Any) -> None:
        await self.conn.send(json.dumps(event))

    async def send_raw(self, text: str) -> None:
        await self.conn.send(text)

    async def recv(self, timeout: float = 15) -> dict[str, Any]:
        event = validate_event(await asyncio.wait_for(self.conn.recv(), timeout))
        self.events.append(event)
        return event

    async def until(self, event_type: str, timeout: float = 15) -> list[dict[str, Any]]:
        """Events received up to and including the first of ``event_type``."""
        out = []
        while True:
            event = await self.recv(timeout)
            out.append(event)
            if event["type"] == event_type:
                return out

    async def append_audio(self, data: bytes, chunk_bytes: int = 960) -> None:
        for i in range(0, len(data), chunk_bytes):
            chunk = base64.b64encode(data[i : i + chunk_bytes]).decode()
            await self.send(type="input_audio_buffer.append", audio=chunk)

    async def update(self, **session: Any) -> dict[str, Any]:
        session.setdefault("type", "realtime")
        await self.send(type="session.update", session=session)
        return (await self.until("session.updated"))[-1]


@pytest.fixture(scope="session")
def utterance_pcm() -> bytes:
    """The test utterance spoken by eSpeak NG, PCM16 24 kHz (synthesized once)."""
    return spoken(UTTERANCE)


@pytest.fixture(scope="session")
def turn_pcm(utterance_pcm: bytes) -> bytes:
    """0.5 s silence + utterance + 1 s silence: one full turn for server VAD."""
    return audio.silence(500) + utterance_pcm + audio.silence(1000)


@pytest.fixture(scope="session", autouse=True)
def _warm_engines() -> None:
    speech.warm_up()


@pytest.fixture(scope="session")
def utterance_text() -> str:
    return UTTERANCE


@pytest.fixture
def client_cls() -> type[Client]:
    """The :class:`Client` test driver (fixtures avoid importing conftest as a module)."""
    return Client


@pytest.fixture
def event_validator():
    return validate_event


@pytest.fixture(autouse=True)
def _fast_password_hashing() -> None:
    """Overrides tests/conftest.py's Django-only autouse fixture: these tests need no Django
    (and must run with ``-p no:django``)."""


@pytest.fixture(autouse=True)
def _unpaced_local_engine() -> None:
    """Overrides tests/conftest.py's Django-only autouse fixture: here each test passes
    ``realtime_pacing`` to the engine itself."""
