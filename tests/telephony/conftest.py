"""Phone fixtures: tenant A and B each route a Twilio number to a local agent; Twilio's side of
a call is played from recorded-style μ-law frames in Twilio's message format."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import override_settings

from agents.models import Agent, PhoneNumber
from agents.realtime import audio
from agents.telephony import twilio_signature
from agents.telephony_views import phone_number_create
from tenants.scoping import tenant_scope
from tests.spoken import spoken

UTTERANCE = "what is the status of my order"
NUMBER_A = "+14155550100"
NUMBER_B = "+14155550199"
CALLER = "+14155550123"
AUTH_TOKEN_A = "0123456789abcdef0123456789abcdef"
AUTH_TOKEN_B = "fedcba9876543210fedcba9876543210"
WEBHOOK_URL = "http://testserver/twilio/voice"
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz, what Twilio sends per media message
STREAM_SID = "MZ00000000000000000000000000000001"
CALL_SID = "CA00000000000000000000000000000001"
ACCOUNT_SID = "AC00000000000000000000000000000001"


@dataclass
class Phone:
    world: Any
    agent: Agent
    number: PhoneNumber
    other_agent: Agent
    other_number: PhoneNumber


def agent_create(tenant, name: str) -> Agent:
    with tenant_scope(tenant):
        return Agent.objects.create(
            tenant=tenant, name=name, provider="local", model="gpt-realtime-2",
            instructions="You answer the phone for a shop.",
        )  # fmt: skip


@pytest.fixture
def phone(world) -> Phone:
    agent = agent_create(world.tenant_a, "Phone assistant")
    number = phone_number_create(
        tenant=world.tenant_a, number=NUMBER_A, agent=agent, auth_token=AUTH_TOKEN_A,
        actor=world.owner_a,
    )  # fmt: skip
    other_agent = agent_create(world.tenant_b, "B's phone assistant")
    other_number = phone_number_create(
        tenant=world.tenant_b, number=NUMBER_B, agent=other_agent, auth_token=AUTH_TOKEN_B,
        actor=world.owner_b,
    )  # fmt: skip
    return Phone(world, agent, number, other_agent, other_number)


@pytest.fixture
def phone_urls():
    with override_settings(ROOT_URLCONF="tests.telephony.urls"):
        yield


def call_params(to: str = NUMBER_A, caller: str = CALLER) -> dict[str, str]:
    """The form Twilio posts to the voice webhook when a call comes in."""
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": CALL_SID,
        "CallStatus": "ringing",
        "Called": to,
        "Caller": caller,
        "Direction": "inbound",
        "From": caller,
        "To": to,
    }


def signed_headers(
    params: dict[str, str], *, auth_token: str = AUTH_TOKEN_A, url: str = WEBHOOK_URL
) -> dict[str, str]:
    signature = twilio_signature(auth_token=auth_token, url=url, params=params.items())
    return {"X-Twilio-Signature": signature}


# --- Twilio's side of the media stream ------------------------------------------------------


@pytest.fixture(scope="session")
def utterance_ulaw() -> bytes:
    """The caller says the test utterance: eSpeak at 24 kHz, resampled to 8 kHz, μ-law."""
    pcm = spoken(UTTERANCE, rate_hz=24000, voice="en-us")
    return audio.ulaw_encode(audio.resample(pcm, 24000, audio.G711_RATE))


@pytest.fixture(scope="session")
def ulaw_silence() -> bytes:
    return audio.ulaw_encode(audio.silence(1000, audio.G711_RATE))  # one second


class TwilioStream:
    """Builds the messages Twilio sends on a media stream, numbered and timed like Twilio's."""

    def __init__(self, stream_sid: str = STREAM_SID) -> None:
        self.stream_sid = stream_sid
        self.sequence = 0
        self.chunk = 0
        self.timestamp_ms = 0

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, parameters: dict[str, str]) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "accountSid": ACCOUNT_SID,
                    "streamSid": self.stream_sid,
                    "callSid": CALL_SID,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": parameters,
                },
                "streamSid": self.stream_sid,
            }
        )

    def media(self, ulaw: bytes) -> list[str]:
        """``ulaw`` cut into 20 ms ``media`` messages."""
        messages = []
        for offset in range(0, len(ulaw), FRAME_BYTES):
            frame = ulaw[offset : offset + FRAME_BYTES]
            self.chunk += 1
            messages.append(
                json.dumps(
                    {
                        "event": "media",
                        "sequenceNumber": self._next(),
                        "media": {
                            "track": "inbound",
                            "chunk": str(self.chunk),
                            "timestamp": str(self.timestamp_ms),
                            "payload": base64.b64encode(frame).decode(),
                        },
                        "streamSid": self.stream_sid,
                    },
                    separators=(",", ":"),
                )
            )
            self.timestamp_ms += len(frame) // 8
        return messages

    def mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
            }
        )
