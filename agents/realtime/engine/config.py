"""Session configuration: the session object a session starts with, and ``session.update``.

Pure functions: they take the current configuration and a client event and return the new
configuration (or raise :class:`ProtocolError`); the session shell emits ``session.updated``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .. import audio, speech
from ..protocol import (
    ProtocolError,
    deep_merge,
    default_realtime_session,
    default_transcription_session,
    default_translation_session,
    default_turn_detection,
    is_translation_model,
)


def validate(model: Any, event: dict[str, Any]) -> None:
    """Check a client event against the SDK's model; raise ``invalid_value`` on mismatch."""
    try:
        model.model_validate(event)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err.get("loc", ()))
        raise ProtocolError(
            "invalid_value", f"Invalid '{param}': {err.get('msg')}", param=param
        ) from None


def session_kind(model: str, intent: str | None) -> str:
    """``realtime``, ``transcription`` or ``translation`` (a translation model alone opens a
    translation session)."""
    if intent == "transcription":
        return "transcription"
    if intent == "translation" or (intent is None and is_translation_model(model)):
        return "translation"
    return "realtime"


def initial_config(kind: str, session_id: str, model: str, expires_at: int) -> dict[str, Any]:
    if kind == "transcription":
        return default_transcription_session(session_id, expires_at)
    if kind == "translation":
        return default_translation_session(session_id, model, expires_at)
    return default_realtime_session(session_id, model, expires_at)


def input_format(config: dict[str, Any]) -> str:
    if config.get("type") == "translation":
        return "audio/pcm"  # translation input is always 24 kHz PCM16 mono
    format_type: str = config["audio"]["input"]["format"]["type"]
    return format_type


def turn_detector(
    turn_detection: dict[str, Any] | None, input_rate: int
) -> speech.VoiceActivityDetector | None:
    """The voice activity detector a ``turn_detection`` configuration asks for (None: off)."""
    if not turn_detection:
        return None
    if turn_detection.get("type") == "semantic_vad":
        # eagerness -> how long a pause ends the turn
        pause_ms = {"low": 1200, "medium": 800, "high": 400}.get(
            turn_detection.get("eagerness") or "auto", 800
        )
        return speech.VoiceActivityDetector(
            input_rate=input_rate, silence_duration_ms=pause_ms, prefix_padding_ms=300
        )
    threshold = turn_detection.get("threshold")
    silence = turn_detection.get("silence_duration_ms")
    prefix = turn_detection.get("prefix_padding_ms")
    return speech.VoiceActivityDetector(
        input_rate=input_rate,
        threshold=0.5 if threshold is None else threshold,
        silence_duration_ms=500 if silence is None else silence,
        prefix_padding_ms=300 if prefix is None else prefix,
    )


def translation_turn_detection() -> dict[str, Any]:
    """Translation sessions have no turn detection setting: utterances are found by VAD."""
    return default_turn_detection()


def _session_of(event: dict[str, Any]) -> dict[str, Any]:
    session = event.get("session")
    if not isinstance(session, dict):
        raise ProtocolError(
            "missing_required_parameter", "Missing required parameter: 'session'.", param="session"
        )
    return session


def realtime_update(
    config: dict[str, Any], event: dict[str, Any], *, model: str, assistant_audio_sent: bool
) -> dict[str, Any]:
    """The configuration after a realtime or transcription ``session.update`` (it may switch
    between the two; ``model`` is the session's, set at creation)."""
    from openai.types.realtime import SessionUpdateEvent

    session = _session_of(event)
    if "type" not in session:
        raise ProtocolError(
            "missing_required_parameter",
            "Missing required parameter: 'session.type'.",
            param="session.type",
        )
    validate(SessionUpdateEvent, event)
    update = {k: v for k, v in session.items() if k not in ("model", "id", "object", "expires_at")}
    if isinstance(update.get("tools"), list):
        # MCP credentials are used, never echoed (and the engine contacts no server).
        update["tools"] = [
            {k: v for k, v in tool.items() if k != "authorization"}
            if isinstance(tool, dict) and tool.get("type") == "mcp"
            else tool
            for tool in update["tools"]
        ]
    for path in (("audio", "input", "format"), ("audio", "output", "format")):
        fmt: Any = update
        for key in path:
            fmt = fmt.get(key) if isinstance(fmt, dict) else None
        if isinstance(fmt, dict):
            fmt.setdefault("type", "audio/pcm")
            if fmt["type"] == "audio/pcm":
                fmt.setdefault("rate", 24000)
    if update["type"] != config["type"]:
        kind = "transcription" if update["type"] == "transcription" else "realtime"
        base = initial_config(kind, config["id"], model, config["expires_at"])
    else:
        base = config
    new = deep_merge(base, update)
    voice = (new.get("audio", {}).get("output") or {}).get("voice")
    old_voice = (config.get("audio", {}).get("output") or {}).get("voice")
    if assistant_audio_sent and voice != old_voice:
        raise ProtocolError(
            "cannot_update_voice",
            "Cannot update a conversation's voice if assistant audio is present.",
            param="session.audio.output.voice",
        )
    return new


_TRANSLATION_AUDIO_KEYS = {"input": {"transcription", "noise_reduction"}, "output": {"language"}}


def translation_update(config: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """The configuration after a translation ``session.update``: the output language, source
    transcription and noise reduction may change (type and model are set at creation)."""
    from openai.types.realtime import RealtimeTranslationSessionUpdateEvent

    session = _session_of(event)
    validate(RealtimeTranslationSessionUpdateEvent, event)
    for key, what in (("type", "type"), ("model", "model")):
        current = "translation" if key == "type" else config["model"]
        if session.get(key, current) != current:
            raise ProtocolError(
                "invalid_value",
                f"The session {what} is set at creation and cannot be changed with session.update.",
                param=f"session.{key}",
            )
    unknown = sorted(set(session) - {"type", "model", "audio"})
    if unknown:
        raise ProtocolError(
            "unknown_parameter",
            f"Unknown parameter: 'session.{unknown[0]}'.",
            param=f"session.{unknown[0]}",
        )
    audio_update = session.get("audio") or {}
    for part, value in audio_update.items():
        keys = _TRANSLATION_AUDIO_KEYS.get(part)
        bad = [part] if keys is None else sorted(set(value or {}) - keys)
        if bad:
            name = f"session.audio.{part}" + (f".{bad[0]}" if keys is not None else "")
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{name}'.", param=name)
    new = dict(config)
    new["audio"] = {part: dict(config["audio"][part]) for part in ("input", "output")}
    for part in ("input", "output"):
        for key, value in (audio_update.get(part) or {}).items():
            current = new["audio"][part].get(key)
            if key == "noise_reduction" and isinstance(value, dict) and isinstance(current, dict):
                value = {**current, **value}  # an update without strength keeps it
            new["audio"][part][key] = value
    return new


def input_rate(config: dict[str, Any]) -> int:
    return audio.format_rate(input_format(config))
