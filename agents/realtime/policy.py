"""What a client may do in a session, and the ``session.update`` the platform sends upstream.

The agent's stored configuration is frozen into a ``SessionPolicy`` when a socket opens. The
platform writes the upstream session from it; a widget (browser) client can only talk, never
configure, and a tenant's backend (API client) may adjust the session within the policy: the
model is fixed, voice and reasoning effort come from the catalogue, and max output tokens stay
under the agent's limit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from agents import catalogue
from agents.realtime.relay.intake import session_problem
from agents.realtime.relay.widget_view import session_for_widget

CHANNEL_WIDGET = "widget"
CHANNEL_API = "api"
CHANNEL_PHONE = "phone"

KIND_VOICE_AGENT = catalogue.VOICE_AGENT
KIND_TRANSCRIPTION = catalogue.TRANSCRIPTION
KIND_TRANSLATION = catalogue.TRANSLATION

VOICES = frozenset(catalogue.VOICES)
EFFORTS = frozenset(catalogue.REASONING_EFFORTS)
FORMAT_BYTES_PER_MS = {"audio/pcm": 48, "audio/pcmu": 8, "audio/pcma": 8}

# Events a browser may send (the widget socket). Everything else is refused with an error.
WIDGET_EVENTS = frozenset(
    {
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "response.create",
        "response.cancel",
        "conversation.item.truncate",
        "output_audio_buffer.clear",
    }
)
# A tenant backend may also configure the session (clamped) and manage items.
API_EVENTS = WIDGET_EVENTS | {
    "session.update",
    "conversation.item.delete",
    "conversation.item.retrieve",
}
TRANSCRIPTION_EVENTS = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
    }
)
# Translation sessions speak their own protocol (the SDK's realtime.translations).
TRANSLATION_EVENTS = frozenset(
    {"session.update", "session.input_audio_buffer.append", "session.close"}
)
TRANSLATION_LANGUAGES = frozenset(code for code, _ in catalogue.TRANSLATION_LANGUAGES)
WIDGET_USER_CONTENT = frozenset({"input_text", "input_image"})
# Fields of response.create that only the platform (or a backend) may set.
RESPONSE_OVERRIDES = frozenset(
    {"instructions", "tools", "tool_choice", "model", "voice", "prompt", "reasoning", "audio"}
)


# Tools the platform itself runs (``end_call``, ``transfer_call``): never a client's to answer.
BUILTIN = "builtin"
END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"


def builtin_tools(
    *, end_call: bool, transfer_call: bool, channel: str
) -> tuple[dict[str, Any], ...]:
    """The built-in tools an agent's session offers (``transfer_call``: phone calls only)."""
    tools: list[dict[str, Any]] = []
    if end_call:
        tools.append(
            {
                "name": END_CALL,
                "execution": BUILTIN,
                "description": "End the conversation and hang up. Call it only once you have "
                "said goodbye and the user has nothing more to ask; the call ends as soon as "
                "your last words have been heard.",
                "parameters": {"type": "object", "properties": {}},
            }
        )
    if transfer_call and channel == CHANNEL_PHONE:
        tools.append(
            {
                "name": TRANSFER_CALL,
                "execution": BUILTIN,
                "description": "Transfer the caller to a person. Tell the caller you are "
                "transferring them first; the transfer starts once that has been heard.",
                "parameters": {"type": "object", "properties": {}},
            }
        )
    return tuple(tools)


class PolicyViolation(Exception):
    """A client event the session refuses; reported as an ``error`` event, the session goes on."""

    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def recording_announcement(notice: str) -> str:
    """The instructions of a recorded phone call's first response: say the notice.

    The first line is the local engine's greeting convention (``responder.greeting``); OpenAI's
    model reads both lines as the instruction they are. The same event works with both.
    """
    notice = " ".join(notice.split())
    return (
        f"Greeting: {notice}\n"
        f'Start the call by saying exactly this, word for word, and nothing else: "{notice}"'
    )


def opening_instructions(
    *, notice: str = "", first_message: str = "", greet_freely: bool = False
) -> str:
    """The instructions of the response that opens a session: the recording notice (phone) and
    the agent's first message, said word for word, in that order (``recording_announcement``'s
    convention). ``greet_freely``: no first message is set; after the notice, the model greets
    in its own words (alone, it needs no per-response instructions at all: see
    ``SessionPolicy.opening``)."""
    said = " ".join(" ".join(part.split()) for part in (notice, first_message) if part.strip())
    text = recording_announcement(said)
    if greet_freely:
        text += "\nThen greet the user briefly, as your instructions say."
    return text


@dataclass(frozen=True)
class SessionPolicy:
    """The agent configuration a session runs with (a snapshot taken at connect)."""

    agent_id: int
    kind: str
    model: str
    channel: str
    voice: str = "marin"
    instructions: str = ""
    reasoning_effort: str = "low"
    turn_detection: str = "server_vad"
    vad_eagerness: str = "auto"
    input_audio_format: str = "audio/pcm"
    output_audio_format: str = "audio/pcm"
    max_output_tokens: int | None = None
    target_language: str = ""
    tools: tuple[dict[str, Any], ...] = ()
    mcp_servers: tuple[dict[str, Any], ...] = ()
    tool_preambles: bool = False
    # Both sides of the audio are recorded (the agent's setting under the tenant's policy);
    # the widget shows ``recording_notice`` first, a phone call hears it said.
    recording: bool = False
    recording_notice: str = ""
    # Upper bound of audio a client may send ahead of real time, in milliseconds.
    audio_burst_ms: int = 5000
    # The agent opens the conversation (else it waits for the user), with ``first_message``
    # word for word when set (its prompt variables already filled, as in ``instructions``).
    speaks_first: bool = False
    first_message: str = ""
    # Where ``transfer_call`` sends a phone call (E.164); the tool exists only with a number.
    transfer_number: str = ""

    @property
    def opening(self) -> dict[str, Any] | None:
        """The ``response`` of the platform's opening ``response.create`` (None: the agent
        waits for the user). A recorded phone call always opens with its notice."""
        if self.kind != KIND_VOICE_AGENT:
            return None
        notice = self.recording_notice if self.recording and self.channel == CHANNEL_PHONE else ""
        first_message = self.first_message if self.speaks_first else ""
        if not notice and not first_message:
            return {} if self.speaks_first else None
        return {
            "instructions": opening_instructions(
                notice=notice,
                first_message=first_message,
                greet_freely=self.speaks_first and not first_message,
            )
        }

    @property
    def input_bytes_per_ms(self) -> int:
        return FORMAT_BYTES_PER_MS.get(self.input_audio_format, 48)

    @property
    def output_bytes_per_ms(self) -> int:
        return FORMAT_BYTES_PER_MS.get(self.output_audio_format, 48)

    @property
    def is_transcription(self) -> bool:
        return self.kind == KIND_TRANSCRIPTION

    @property
    def is_translation(self) -> bool:
        return self.kind == KIND_TRANSLATION

    @property
    def is_minute_metered(self) -> bool:
        return self.kind in (KIND_TRANSCRIPTION, KIND_TRANSLATION)

    @property
    def append_type(self) -> str:
        if self.is_translation:
            return "session.input_audio_buffer.append"
        return "input_audio_buffer.append"

    @property
    def allowed_events(self) -> frozenset[str]:
        if self.is_translation:
            return TRANSLATION_EVENTS
        if self.is_transcription:
            return TRANSCRIPTION_EVENTS
        return API_EVENTS if self.channel == CHANNEL_API else WIDGET_EVENTS


def _audio_format(name: str) -> dict[str, Any]:
    return {"type": name, "rate": 24000} if name == "audio/pcm" else {"type": name}


def _turn_detection(policy: SessionPolicy) -> dict[str, Any] | None:
    if policy.turn_detection == "none":
        return None
    if policy.turn_detection == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": policy.vad_eagerness}
    return {"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300}


def mcp_tool(server: dict[str, Any]) -> dict[str, Any]:
    """A stored MCP server as a ``type: "mcp"`` tool (authorization already decrypted)."""
    tool: dict[str, Any] = {
        "type": "mcp",
        "server_label": server.get("label") or server.get("server_label") or "mcp",
        "server_url": server["url"],
        "require_approval": "never",
    }
    if server.get("allowed_tools"):
        tool["allowed_tools"] = list(server["allowed_tools"])
    if server.get("authorization"):
        tool["authorization"] = server["authorization"]
    return tool


def function_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A stored function tool as the upstream sees it (execution details stay here)."""
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description", ""),
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }


def continued_instructions(instructions: str, summary: str) -> str:
    """The agent's instructions for a segment that continues an earlier conversation."""
    return (
        f"{instructions}\n\n"
        "# Conversation so far\n"
        "This conversation continues from an earlier session; do not greet the user again. "
        "What was said before, in summary:\n"
        f"{summary.strip() or '(nothing of note yet)'}\n"
        "The last turns follow as conversation items."
    ).strip()


def preamble_instructions(tools: tuple[dict[str, Any], ...]) -> str:
    """The instruction that makes the model say a short filler before a slow tool."""
    phrases = [
        f'- before {tool["name"]}: "{tool["filler_phrase"]}"'
        for tool in tools
        if tool.get("filler_phrase")
    ]
    text = (
        "# Preambles\nBefore you call a tool, say one short sentence so the caller knows you "
        'are on it (for example "Let me check that for you."), then call the tool at once.'
    )
    return text + ("\nUse these phrases:\n" + "\n".join(phrases) if phrases else "")


def agent_instructions(policy: SessionPolicy) -> str:
    if policy.tool_preambles and policy.tools:
        return f"{policy.instructions}\n\n{preamble_instructions(policy.tools)}".strip()
    return policy.instructions


def session_config(policy: SessionPolicy, *, summary: str | None = None) -> dict[str, Any]:
    """The ``session`` object of the platform's ``session.update`` (``summary``: continuing)."""
    if policy.is_translation:
        return {
            "audio": {
                "input": {"transcription": {"model": "gpt-realtime-whisper"}},
                "output": {"language": policy.target_language or "en"},
            }
        }
    if policy.is_transcription:
        return {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": _audio_format(policy.input_audio_format),
                    "transcription": {"model": policy.model},
                    "turn_detection": _turn_detection(policy),
                }
            },
        }
    session: dict[str, Any] = {
        "type": "realtime",
        "model": policy.model,
        "instructions": agent_instructions(policy)
        if summary is None
        else continued_instructions(agent_instructions(policy), summary),
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": _audio_format(policy.input_audio_format),
                "transcription": {"model": "gpt-realtime-whisper"},
                "turn_detection": _turn_detection(policy),
            },
            "output": {"format": _audio_format(policy.output_audio_format), "voice": policy.voice},
        },
        "tools": [function_tool(tool) for tool in policy.tools]
        + [mcp_tool(server) for server in policy.mcp_servers],
        "max_output_tokens": policy.max_output_tokens or "inf",
    }
    if policy.model == "gpt-realtime-2":
        session["reasoning"] = {"effort": policy.reasoning_effort}
    return session


def session_update_event(policy: SessionPolicy, *, summary: str | None = None) -> dict[str, Any]:
    return {"type": "session.update", "session": session_config(policy, summary=summary)}


SEED_ITEM_PREFIX = "vp_seed_"


def seed_item_event(*, role: str, text: str, segment: int, index: int) -> dict[str, Any]:
    """A past turn, replayed verbatim into a new segment (its id marks it as a replay)."""
    part = {"type": "input_text" if role == "user" else "output_text", "text": text}
    return {
        "type": "conversation.item.create",
        "item": {
            "id": f"{SEED_ITEM_PREFIX}{segment}_{index}",
            "type": "message",
            "role": "user" if role == "user" else "assistant",
            "content": [part],
        },
    }


def _object(container: dict[str, Any], key: str, param: str) -> dict[str, Any]:
    """``container[key]`` when it is an object, {} when absent; anything else is refused."""
    if key not in container:
        return {}
    value = container[key]
    if not isinstance(value, dict):
        raise PolicyViolation("invalid_value", f"{param} must be an object", param=param)
    return value


def _clamp_max_output_tokens(policy: SessionPolicy, container: dict[str, Any]) -> None:
    limit = policy.max_output_tokens
    requested = container.get("max_output_tokens")
    if limit is not None and requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested > limit:
            container["max_output_tokens"] = limit


def _check_schema(policy: SessionPolicy, session: Any) -> dict[str, Any]:
    expected = "translation" if policy.is_translation else session_type(policy)
    problem = session_problem(session, expected_type=expected)
    if problem is not None:
        code, message, param = problem
        raise PolicyViolation(code, message, param=param)
    return copy.deepcopy(session)


def session_type(policy: SessionPolicy) -> str:
    return "transcription" if policy.is_transcription else "realtime"


def _clamp_transcription_update(policy: SessionPolicy, session: dict[str, Any]) -> dict[str, Any]:
    """Language, prompt, format, turn detection and noise reduction are the client's; the
    model is the agent's."""
    audio_input = _object(
        _object(session, "audio", "session.audio"), "input", "session.audio.input"
    )
    transcription = _object(audio_input, "transcription", "session.audio.input.transcription")
    if audio_input and "transcription" in audio_input:
        audio_input["transcription"] = {**transcription, "model": policy.model}
    session.pop("model", None)
    return {"type": "session.update", "session": session}


def _clamp_translation_update(policy: SessionPolicy, session: dict[str, Any]) -> dict[str, Any]:
    """The output language among those the model offers; the source transcription model fixed."""
    audio = _object(session, "audio", "session.audio")
    language = _object(audio, "output", "session.audio.output").get("language")
    if language is not None and language not in TRANSLATION_LANGUAGES:
        raise PolicyViolation(
            "invalid_value",
            f"output language {language!r} is not offered; choose one of "
            + ", ".join(sorted(TRANSLATION_LANGUAGES)),
            param="session.audio.output.language",
        )
    audio_input = _object(audio, "input", "session.audio.input")
    if audio_input.get("transcription") is not None:
        audio_input["transcription"] = {"model": "gpt-realtime-whisper"}
    return {"type": "session.update", "session": session}


def _clamp_session_update(policy: SessionPolicy, session: Any) -> dict[str, Any]:
    session = _check_schema(policy, session)
    if policy.is_translation:
        return _clamp_translation_update(policy, session)
    if policy.is_transcription:
        return _clamp_transcription_update(policy, session)
    session.pop("model", None)  # the agent's model is fixed
    audio = _object(session, "audio", "session.audio")
    output = _object(audio, "output", "session.audio.output")
    _object(audio, "input", "session.audio.input")
    voice = output.get("voice")
    if voice is not None and voice not in VOICES:
        raise PolicyViolation(
            "invalid_value", f"voice {voice!r} is not offered", param="session.audio.output.voice"
        )
    effort = _object(session, "reasoning", "session.reasoning").get("effort")
    if effort is not None and effort not in EFFORTS:
        raise PolicyViolation(
            "invalid_value",
            f"reasoning effort {effort!r} is not offered",
            param="session.reasoning.effort",
        )
    _clamp_max_output_tokens(policy, session)
    return {"type": "session.update", "session": session}


def _check_user_message(item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise PolicyViolation("invalid_value", f"{param} must be an object", param=param)
    if item.get("type") == "item_reference" and param != "item":
        return
    if item.get("type", "message") != "message" or item.get("role") != "user":
        raise PolicyViolation(
            "item_not_allowed",
            "only user messages (text or image) may be added to the conversation",
            param=param,
        )
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise PolicyViolation("invalid_value", f"{param}.content must be a list", param=param)
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in WIDGET_USER_CONTENT:
            raise PolicyViolation(
                "item_not_allowed",
                "only input_text and input_image content may be sent",
                param=f"{param}.content",
            )


def _check_widget_response(event: dict[str, Any]) -> None:
    response = _object(event, "response", "response")
    overrides = sorted(RESPONSE_OVERRIDES & set(response))
    if overrides:
        raise PolicyViolation(
            "override_not_allowed",
            f"response.create may not override {', '.join(overrides)} on this socket",
            param="response",
        )
    if "input" in response:
        entries = response["input"]
        if not isinstance(entries, list):
            raise PolicyViolation("invalid_value", "response.input must be a list", param="input")
        for entry in entries:
            _check_user_message(entry, "response.input")


def client_event_filter(policy: SessionPolicy, event: dict[str, Any]) -> dict[str, Any]:
    """The event to forward upstream for a client event, or ``PolicyViolation``."""
    event_type = event.get("type")
    if not isinstance(event_type, str):
        raise PolicyViolation("missing_type", "every event needs a string 'type'", param="type")
    if event_type not in policy.allowed_events:
        raise PolicyViolation(
            "event_not_allowed", f"{event_type!r} is not allowed on this socket", param="type"
        )
    if event_type == "session.update":
        return _clamp_session_update(policy, event.get("session"))
    if policy.channel != CHANNEL_API:
        if event_type == "conversation.item.create":
            _check_user_message(event.get("item"), "item")
        elif event_type == "response.create":
            _check_widget_response(event)
    if event_type == "response.create" and isinstance(event.get("response"), dict):
        # Every socket's limit is the agent's: "inf", a string or a bigger number is clamped.
        event = {**event, "response": dict(event["response"])}
        _clamp_max_output_tokens(policy, event["response"])
    return event


SENSITIVE_SESSION_FIELDS = ("instructions",)


def sanitize_session_event(policy: SessionPolicy, event: dict[str, Any]) -> dict[str, Any]:
    """Strip what a client must not see from ``session.created``/``session.updated``.

    MCP authorization never leaves the platform; a browser does not see the instructions.
    """
    session = event.get("session")
    if not isinstance(session, dict):
        return event
    session = dict(session)
    tools = session.get("tools")
    if isinstance(tools, list):
        session["tools"] = [
            {k: v for k, v in tool.items() if k not in ("authorization", "headers")}
            if isinstance(tool, dict)
            else tool
            for tool in tools
        ]
    if policy.channel == CHANNEL_WIDGET:
        for name in SENSITIVE_SESSION_FIELDS:
            if name in session:
                session[name] = ""
        # Only the tools the page runs itself: no webhook tools, no MCP servers.
        client_tools = frozenset(
            str(tool.get("name"))
            for tool in policy.tools
            if tool.get("execution") not in ("webhook", BUILTIN)
        )
        session = session_for_widget(session, client_tools=client_tools)
    return {**event, "session": session}
