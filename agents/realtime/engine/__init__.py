"""The bundled local realtime engine: a development stand-in for the OpenAI Realtime API.

It is NOT an AI. It speaks the GA Realtime protocol (JSON text events, checked against the
``openai`` SDK's models), hears with pocketsphinx, detects turns with webrtcvad, answers with
the deterministic :mod:`..responder` ("You said: ...", tool calls when a tool is named) and
speaks with eSpeak NG. Usage on every ``response.done`` follows :mod:`..protocol`'s documented
token formulas (user audio 1 token per 100 ms, assistant audio 1 token per 50 ms); a
``rate_limits.updated`` follows every ``response.done``.

The parts, each usable without a socket (they take an event or audio and return what to emit):

* :mod:`.config` -- the session object and ``session.update`` (realtime, transcription,
  translation);
* :mod:`.conversation` -- items in order, their tokens, ``previous_item_id`` (null or a real id),
  truncate and delete;
* :mod:`.input_audio` -- the input buffer and turn detection;
* :mod:`.transcription` -- the input transcript events;
* :mod:`.speaking` -- synthesized audio cut into deltas with their words, and real-time pacing;
* :mod:`.responses` -- what a response runs with and costs, and the events that stream it;
* :mod:`.shell` -- the I/O shell all sessions share (queues, worker, expiry, close);
* :mod:`.session` -- realtime and transcription sessions; :mod:`.translation` -- translation
  sessions; :mod:`.connection` -- the in-process connection; :mod:`..server` -- the standalone
  websockets server.

OpenAI's order: when a turn ends (VAD or commit) the user item is added and ``response.created``
follows at once; recognition runs beside it (one at a time, in order), so the input transcript
may arrive after ``response.created``; the response waits for it before it answers. In a
spoken answer the first transcript delta comes before the first audio delta.

Tools: when the user names several configured tools, one response holds one output item per
tool (parallel calls). Function calls end the response (the client sends one
``function_call_output`` per call, then ``response.create``; the answer speaks every output
present). Session tools of ``type: "mcp"`` are imitated without any network call: adding one
with ``session.update`` emits, after ``session.updated``, ``conversation.item.added``
(an ``mcp_list_tools`` item), ``mcp_list_tools.in_progress``, ``mcp_list_tools.completed``
and ``conversation.item.done`` (its ``tools`` = the ``allowed_tools``; the server's other
tools are unknown to the engine); naming an allowed MCP tool gives an ``mcp_call`` output item
(``response.output_item.added``, ``response.mcp_call_arguments.delta``/``.done``,
``response.mcp_call.in_progress``, ``response.mcp_call.completed``,
``response.output_item.done``) whose ``output`` is a placeholder
("[local engine: MCP server <label> not contacted] <tool> called ..."), followed in the *same*
response by a message item speaking "The <tool words> tool on <label> returned: <output>."
(when function calls were made in the same turn, that sentence waits for the answer to their
outputs instead). ``require_approval`` is accepted and treated as "never" (no
``mcp_approval_request`` items); ``authorization`` is never echoed back.

Sessions by ``intent``: ``None`` (realtime, or translation for a ``gpt-realtime-translate``
model), ``"transcription"``, ``"translation"`` (see :mod:`.translation`; no token usage is
reported there: translation is billed per minute).

Two transports:

* in process: ``conn = await connect_local(model)`` returns a :class:`LocalConnection` with the
  small interface of a ``websockets`` client connection (``send``, ``recv``, ``close``,
  ``close_code``, ``close_reason``; ``recv`` raises ``websockets.exceptions.ConnectionClosed``
  once the session has ended and its last events were read);
* a standalone websockets server at ``ws://HOST:PORT/v1/realtime?model=...``
  (:func:`agents.realtime.server.serve`, or ``python -m agents.realtime.engine --port 8765``)
  that the official SDK can use through ``AsyncOpenAI(websocket_base_url="ws://HOST:PORT/v1")``.

Error codes (``error.type`` is always ``invalid_request_error``; ``error.event_id`` is the
offending client event's ``event_id`` when it had one): ``invalid_json``, ``invalid_value``
(unknown event type with ``param="type"``, bad base64 with ``param="audio"``, schema errors),
``missing_required_parameter``, ``unknown_parameter`` (translation ``session.update``),
``input_audio_buffer_commit_empty``, ``conversation_already_has_active_response``,
``response_cancel_not_active``, ``item_not_found``, ``cannot_update_voice``, ``server_error``,
``session_expired`` (then close 1001).

Timing: recognition takes about 0.25 s per second of audio (one decoder per process behind a
lock); appends and VAD cost about 0.07 ms per 20 ms frame. Spoken audio goes out in 100 ms
deltas, in real time with ``realtime_pacing`` (the platform's ``VP_LOCAL_ENGINE_REALTIME_PACING``,
on by default), else as fast as it is synthesized.
"""

from .connection import LocalConnection, connect_local, open_session
from .responses import RateLimits, mcp_placeholder_output
from .session import DEFAULT_MODEL, LocalEngineSession
from .shell import EngineShell
from .speaking import OUTPUT_CHUNK_MS, synthesize_in_language
from .translation import TranslationSession, translation_placeholder

__all__ = [
    "DEFAULT_MODEL",
    "OUTPUT_CHUNK_MS",
    "EngineShell",
    "LocalConnection",
    "LocalEngineSession",
    "RateLimits",
    "TranslationSession",
    "connect_local",
    "mcp_placeholder_output",
    "open_session",
    "synthesize_in_language",
    "translation_placeholder",
]
