"""OpenAI Realtime (GA) protocol helpers for the local engine: ids, errors, session defaults,
token accounting.

Token accounting (deterministic, documented so that billing tests can compute it by hand):

* text: ``text_tokens(s) = ceil(len(s) / 4)`` characters (0 for "");
* user audio: ``ceil(ms / 100)`` per audio content part (1 token per 100 ms);
* assistant audio: ``ceil(ms / 50)`` per audio content part (1 token per 50 ms);
* image: 85 tokens per ``input_image`` part (flat, like a low-detail image);
* an item's tokens: user/system message = its text parts + audio parts + images (a user audio
  part's transcript is *not* counted: the model hears the audio); assistant message = audio
  tokens of its audio + text tokens of its transcript or text; function_call = text tokens
  of ``name + arguments``; function_call_output = text tokens of ``output``; mcp_call =
  text tokens of ``name + arguments + output``; mcp_list_tools = 0 (tool definitions are
  not counted, like session tools);
* input of a response = text tokens of the instructions it runs with + the tokens of every
  item of the conversation before it (or of its ``input`` items when ``conversation`` is
  "none");
* cached input tokens = the longest prefix of that input (instructions, then items in order,
  each compared with its token counts) that equals the prefix of the previous response's
  input in this session; a subset of the input, never more;
* output of a response = the tokens of its output items as actually emitted (a cancelled
  response only counts the audio and transcript already sent);
* total = input + output.

Translation sessions (``session.type`` "translation") carry no token usage: the SDK's
translation events have no usage field, and translation is billed per minute of audio.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

IMAGE_TOKENS = 85
USER_AUDIO_MS_PER_TOKEN = 100
ASSISTANT_AUDIO_MS_PER_TOKEN = 50
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
MIN_COMMIT_MS = 100


def new_id(prefix: str) -> str:
    """OpenAI-looking id, e.g. ``item_3f9c...`` (22 random hex chars)."""
    return f"{prefix}_{secrets.token_hex(11)}"


def text_tokens(text: str | None) -> int:
    return math.ceil(len(text) / 4) if text else 0


def user_audio_tokens(ms: float) -> int:
    return math.ceil(ms / USER_AUDIO_MS_PER_TOKEN) if ms > 0 else 0


def assistant_audio_tokens(ms: float) -> int:
    return math.ceil(ms / ASSISTANT_AUDIO_MS_PER_TOKEN) if ms > 0 else 0


@dataclass(frozen=True)
class Tokens:
    """Token counts by modality."""

    text: int = 0
    audio: int = 0
    image: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.text + other.text, self.audio + other.audio, self.image + other.image)

    @property
    def total(self) -> int:
        return self.text + self.audio + self.image


def usage_payload(input_tokens: Tokens, cached: Tokens, output: Tokens) -> dict[str, Any]:
    """A ``RealtimeResponseUsage``-shaped dict."""
    return {
        "total_tokens": input_tokens.total + output.total,
        "input_tokens": input_tokens.total,
        "output_tokens": output.total,
        "input_token_details": {
            "text_tokens": input_tokens.text,
            "audio_tokens": input_tokens.audio,
            "image_tokens": input_tokens.image,
            "cached_tokens": cached.total,
            "cached_tokens_details": {
                "text_tokens": cached.text,
                "audio_tokens": cached.audio,
                "image_tokens": cached.image,
            },
        },
        "output_token_details": {"text_tokens": output.text, "audio_tokens": output.audio},
    }


class ProtocolError(Exception):
    """A client error reported as an ``error`` event; the session continues."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type_


def default_turn_detection() -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }


def default_realtime_session(session_id: str, model: str, expires_at: int) -> dict[str, Any]:
    """The GA realtime session object the engine starts with (as in ``session.created``)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": default_turn_detection(),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "alloy",
                "speed": 1.0,
            },
        },
        "include": None,
    }


def default_transcription_session(session_id: str, expires_at: int) -> dict[str, Any]:
    """The GA transcription session object (``session.type`` "transcription")."""
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-realtime-whisper", "language": "en"},
                "noise_reduction": None,
                "turn_detection": default_turn_detection(),
            }
        },
        "include": None,
    }


TRANSLATION_MODEL = "gpt-realtime-translate"
DEFAULT_TRANSLATION_LANGUAGE = "en"


def is_translation_model(model: str | None) -> bool:
    """``gpt-realtime-translate`` (and dated or suffixed variants of it)."""
    return bool(model) and str(model).startswith(TRANSLATION_MODEL)


def default_translation_session(session_id: str, model: str, expires_at: int) -> dict[str, Any]:
    """The translation session object (``session.type`` "translation"): input is always
    24 kHz PCM16 mono (there is no format field), output language defaults to English and
    source transcription is off until configured."""
    return {
        "type": "translation",
        "id": session_id,
        "model": model,
        "expires_at": expires_at,
        "audio": {
            "input": {"transcription": None, "noise_reduction": None},
            "output": {"language": DEFAULT_TRANSLATION_LANGUAGE},
        },
    }


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``: nested dicts merge unless their ``type``
    differs, anything else replaces (an explicit ``None`` too, e.g. ``turn_detection: null``)."""
    out = dict(base)
    for key, value in update.items():
        current = out.get(key)
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and value.get("type", current.get("type")) == current.get("type")
        ):
            out[key] = deep_merge(current, value)
        else:
            out[key] = value
    return out
