"""Standalone websockets server for the local realtime engine.

``ws://HOST:PORT/v1/realtime?model=...`` (``&intent=transcription`` for transcription
sessions), so that any Realtime client, the official ``openai`` SDK included, can use it:
``AsyncOpenAI(api_key="x", websocket_base_url="ws://HOST:PORT/v1").realtime.connect(...)``.

Translation sessions: ``ws://HOST:PORT/v1/realtime/translations?model=gpt-realtime-translate``
(the path the SDK's ``client.realtime.translations.connect(model=...)`` uses), or
``/v1/realtime?model=gpt-realtime-translate`` (a translation model opens a translation
session), or ``&intent=translation``.
Run it with ``python -m agents.realtime.engine --port 8765`` (or ``agents.realtime.server``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed

from . import speech
from .engine import DEFAULT_MODEL, open_session

log = logging.getLogger(__name__)


REALTIME_PATH = "/v1/realtime"
TRANSLATIONS_PATH = "/v1/realtime/translations"


def _reject_bad_path(connection: Any, request: Any) -> Any:
    if urlsplit(request.path).path.rstrip("/") not in (REALTIME_PATH, TRANSLATIONS_PATH):
        return connection.respond(404, "Not found: use /v1/realtime?model=...\n")
    return None


def _handler_factory(max_session_seconds: float, realtime_pacing: bool) -> Any:
    async def handler(ws: Any) -> None:
        url = urlsplit(ws.request.path)
        query = parse_qs(url.query)
        model = (query.get("model") or [DEFAULT_MODEL])[0]
        intent = (query.get("intent") or [None])[0]
        if url.path.rstrip("/") == TRANSLATIONS_PATH:
            intent = "translation"
        session = open_session(
            model,
            max_session_seconds=max_session_seconds,
            intent=intent,
            realtime_pacing=realtime_pacing,
        )
        await session.start()

        async def pump_out() -> None:
            while True:
                try:
                    message = await session.next_event()
                except ConnectionClosed:
                    await ws.close(session.close_code or 1000, session.close_reason)
                    return
                await ws.send(message)

        writer = asyncio.create_task(pump_out())
        try:
            async for message in ws:
                await session.receive(message)
        except ConnectionClosed:
            pass
        finally:
            if not session.closed:
                await session.close(1000, "client closed", drain=False)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer

    return handler


async def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    max_session_seconds: float | None = None,
    realtime_pacing: bool = False,
) -> Any:
    """Start the standalone server; returns the ``websockets`` server (use ``async with`` or
    ``close()``). ``max_session_seconds`` defaults to env ``VP_LOCAL_ENGINE_MAX_SESSION_SECONDS``
    or 3600."""
    from websockets.asyncio.server import serve as ws_serve

    if max_session_seconds is None:
        max_session_seconds = float(os.environ.get("VP_LOCAL_ENGINE_MAX_SESSION_SECONDS", "3600"))
    return await ws_serve(
        _handler_factory(max_session_seconds, realtime_pacing),
        host,
        port,
        process_request=_reject_bad_path,
        max_size=32 * 2**20,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local OpenAI-Realtime-compatible dev engine")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--realtime-pacing", action="store_true", help="stream audio in real time")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    async def run() -> None:
        await asyncio.to_thread(speech.warm_up)
        server = await serve(args.host, args.port, realtime_pacing=args.realtime_pacing)
        log.info("local realtime engine on ws://%s:%s/v1/realtime", args.host, args.port)
        await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
