"""The in-process transport: a connection shaped like a ``websockets`` client connection."""

from __future__ import annotations

from websockets.exceptions import ConnectionClosed

from .config import session_kind
from .session import DEFAULT_MODEL, LocalEngineSession
from .shell import EngineShell
from .speaking import OUTPUT_CHUNK_MS
from .translation import TranslationSession


def open_session(
    model: str = DEFAULT_MODEL,
    *,
    max_session_seconds: float = 3600.0,
    intent: str | None = None,
    realtime_pacing: bool = False,
    output_chunk_ms: int = OUTPUT_CHUNK_MS,
) -> EngineShell:
    """A new (not yet started) session: translation for ``intent="translation"`` or a
    translation model, else realtime or transcription."""
    if session_kind(model, intent) == "translation":
        return TranslationSession(
            model,
            max_session_seconds=max_session_seconds,
            realtime_pacing=realtime_pacing,
            output_chunk_ms=output_chunk_ms,
        )
    return LocalEngineSession(
        model,
        max_session_seconds=max_session_seconds,
        intent=intent,
        realtime_pacing=realtime_pacing,
        output_chunk_ms=output_chunk_ms,
    )


class LocalConnection:
    """In-process connection to a local engine session, shaped like a ``websockets`` client
    connection: ``send``/``recv``/``close``, ``close_code``/``close_reason``, and
    ``async for message in conn``."""

    def __init__(self, session: EngineShell) -> None:
        self.session = session

    @property
    def close_code(self) -> int | None:
        return self.session.close_code

    @property
    def close_reason(self) -> str:
        return self.session.close_reason

    async def send(self, message: str | bytes) -> None:
        await self.session.receive(message)

    async def recv(self) -> str:
        return await self.session.next_event()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.session.close(code, reason, drain=False)

    def __aiter__(self) -> LocalConnection:
        return self

    async def __anext__(self) -> str:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> LocalConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect_local(
    model: str = DEFAULT_MODEL,
    *,
    max_session_seconds: float = 3600.0,
    intent: str | None = None,
    realtime_pacing: bool = False,
    output_chunk_ms: int = OUTPUT_CHUNK_MS,
) -> LocalConnection:
    """Open an in-process session; its first event (``session.created``) is ready to recv.

    ``intent``: ``None`` (realtime; translation for a ``gpt-realtime-translate`` model),
    ``"transcription"`` or ``"translation"``. ``realtime_pacing``: send spoken audio no faster
    than real time (the platform passes ``VP_LOCAL_ENGINE_REALTIME_PACING``); off, as fast as
    it is synthesized."""
    session = open_session(
        model,
        max_session_seconds=max_session_seconds,
        intent=intent,
        realtime_pacing=realtime_pacing,
        output_chunk_ms=output_chunk_ms,
    )
    await session.start()
    return LocalConnection(session)
