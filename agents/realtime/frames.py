"""Cheap looks at Realtime JSON frames, so that audio crosses the relay without a JSON decode.

Audio frames are most of the traffic (50 a second each way per session). The relay recognises
them with one anchored regular expression over the frame's head, measures the audio from the
base64 length, and forwards the original text. Anything that does not match the canonical shape
takes the slow path: a full ``json.loads`` and validation. The fast path can therefore never let
through more than the slow path would (no duplicate keys, no extra fields).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

# {"type": "input_audio_buffer.append", ["event_id": "...",] "audio": "<base64>"} in either
# order of event_id and audio, nothing else: the head up to the audio's opening quote, the
# base64 run (checked apart: a regular expression walks 1,280 characters for a 20 ms frame in
# 2 µs, a byte translation in 0.5 µs) and the tail from its closing quote. Base64 carries no
# quote or backslash, so the first quote after the head closes the run.
_APPEND_HEAD = re.compile(
    r'\{\s*"type"\s*:\s*"((?:session\.)?input_audio_buffer\.append)"\s*,'
    r'(?:\s*"event_id"\s*:\s*"[A-Za-z0-9_\-.:]{0,64}"\s*,)?'
    r'\s*"audio"\s*:\s*"'
)
_APPEND_TAIL = re.compile(r'"\s*(?:,\s*"event_id"\s*:\s*"[A-Za-z0-9_\-.:]{0,64}"\s*)?\}\s*')
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# The type as the first key, or right after a leading event_id (the order some servers use).
_TYPE_HEAD = re.compile(
    r'\{\s*(?:"event_id"\s*:\s*"[A-Za-z0-9_\-.:]{0,64}"\s*,\s*)?"type"\s*:\s*"([a-z_.]{1,64})"'
)
_DELTA = '"delta":"'


def base64_decoded_bytes(length: int, text: str, end: int) -> int:
    """Decoded size of a base64 run of ``length`` characters ending at ``text[end]``."""
    padding = 0
    if length and text[end - 1] == "=":
        padding = 2 if text[end - 2] == "=" else 1
    return max(0, length // 4 * 3 - padding)  # "=" alone is no audio, not less than none


def append_audio(text: str) -> tuple[str, int] | None:
    """(event type, decoded audio bytes) of a canonical append frame, else None.

    The type is ``input_audio_buffer.append`` (realtime and transcription sessions) or
    ``session.input_audio_buffer.append`` (translation sessions).
    """
    head = _APPEND_HEAD.match(text)
    if head is None:
        return None
    start = head.end()
    end = text.find('"', start)
    if end < 0 or _APPEND_TAIL.fullmatch(text, end) is None:
        return None
    data = text[start:end].rstrip("=")
    if end - start - len(data) > 2:  # at most two "=" of padding
        return None
    if not data.isascii() or data.encode("ascii").translate(None, _BASE64_ALPHABET):
        return None
    return head.group(1), base64_decoded_bytes(end - start, text, end)


def peek_type(text: str) -> str | None:
    """The event type when the frame starts with it (the usual shape), else None."""
    match = _TYPE_HEAD.match(text)
    return match.group(1) if match else None


def delta_bytes(text: str) -> int:
    """Decoded bytes of the base64 ``delta`` of an audio delta event (0 if not found)."""
    start = text.find(_DELTA)
    if start < 0:
        start = text.find('"delta": "')
        if start < 0:
            return 0
        start += len('"delta": "')
    else:
        start += len(_DELTA)
    end = text.find('"', start)
    if end < 0:
        return 0
    return base64_decoded_bytes(end - start, text, end)


def loads_object(text: str | bytes) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (malformed text, arrays, scalars)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def error_event(
    code: str,
    message: str,
    *,
    event_id: str | None = None,
    param: str | None = None,
    error_type: str = "invalid_request_error",
) -> dict[str, Any]:
    """An ``error`` server event, shaped as the SDK's ``RealtimeErrorEvent``."""
    return {
        "type": "error",
        "event_id": "event_vp_" + secrets.token_hex(8),
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        },
    }
