"""An OpenAI-Realtime-shaped echo upstream: one ``response.output_audio.delta`` per append.

``python -m bench.echo --port P`` serves ``ws://127.0.0.1:P/v1/realtime?model=...``. Appends in
the canonical shape are answered without a JSON decode (prefix check and a slice), so that the
echo is never the bottleneck; other frames are decoded, ``session.update`` gets
``session.updated``, everything else is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal

from websockets.asyncio.server import serve

MAX_SIZE = 16 * 1024 * 1024
_APPEND_HEAD = '{"type":"input_audio_buffer.append"'
_AUDIO_KEY = '"audio":"'
_DELTA_HEAD = '{"type":"response.output_audio.delta","event_id":"evt_'
_DELTA_MID = (
    '","response_id":"resp_bench","item_id":"item_bench","output_index":0,'
    '"content_index":0,"delta":"'
)
_DELTA_TAIL = '"}'

_sessions = itertools.count(1)


def _dumps(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"))


async def _handler(ws) -> None:
    number = next(_sessions)
    session = {
        "type": "realtime",
        "object": "realtime.session",
        "id": f"sess_bench_{number}",
        "model": "gpt-realtime-2",
    }
    events = itertools.count(1)
    send = ws.send
    await send(
        _dumps({"type": "session.created", "event_id": f"evt_sc_{number}", "session": session})
    )
    try:
        async for message in ws:
            if not isinstance(message, str):
                continue
            if message.startswith(_APPEND_HEAD):
                start = message.find(_AUDIO_KEY)
                if start > 0:
                    start += len(_AUDIO_KEY)
                    end = message.find('"', start)
                    if end > 0:
                        await send(
                            f"{_DELTA_HEAD}{next(events)}{_DELTA_MID}"
                            f"{message[start:end]}{_DELTA_TAIL}"
                        )
                        continue
            try:
                event = json.loads(message)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "input_audio_buffer.append" and isinstance(event.get("audio"), str):
                await send(f"{_DELTA_HEAD}{next(events)}{_DELTA_MID}{event['audio']}{_DELTA_TAIL}")
            elif kind == "session.update":
                requested = event.get("session")
                if isinstance(requested, dict):
                    session = {**session, **requested, "id": session["id"]}
                    session.setdefault("object", "realtime.session")
                await send(
                    _dumps(
                        {
                            "type": "session.updated",
                            "event_id": f"evt_su_{number}_{next(events)}",
                            "session": session,
                        }
                    )
                )
    except Exception:  # noqa: BLE001 - a peer vanishing mid-frame is not the echo's problem
        pass


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        _handler,
        host,
        port,
        max_size=MAX_SIZE,
        compression=None,
        ping_interval=None,
        max_queue=64,
    ):
        print(f"LISTENING {port}", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
