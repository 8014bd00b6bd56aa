"""Serve the platform: ``python -m voiceplatform.serve [--server uvicorn|daphne] [options]``.

One command line for every place that serves the ASGI application (the Procfile, ``make run``
through ``runplatform``, the tests' real servers, the benchmark), so that they all run what
production runs. The default is uvicorn on uvloop with its sans-I/O ``websockets`` protocol,
chosen by measurement (README, "Performance"); Daphne stays supported (``--server daphne``).

Both servers get the same WebSocket contract from the settings:

* messages and frames up to 2 × ``VP_WS_MAX_MESSAGE_BYTES`` reach the application, which
  answers one over its own limit with a clear ``error`` event; beyond that the server closes
  (uvicorn: 1009);
* no permessage-deflate (base64 audio gains little and costs CPU on every frame);
* a ping every 20 s; ``--proxy-headers`` behind nginx (client address and scheme from
  ``X-Forwarded-For``/``-Proto``, trusted from ``--forwarded-allow-ips`` only, default
  127.0.0.1);
* SIGTERM drains (``agents.drain``), then the server stops.

uvicorn's sans-I/O protocol pauses reading after every message and resumes it when the
application takes it: two ``epoll_ctl`` per frame for a relay that always keeps up.
``RelayWebSocketProtocol`` pauses only when ``ws_max_queue`` messages wait (the option the
sans-I/O protocol ignores), which keeps the backpressure for an application that falls behind.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

APPLICATION = "voiceplatform.asgi:application"
SERVERS = ("uvicorn", "daphne")
LOOPS = ("uvloop", "asyncio")
DEFAULT_SERVER = "uvicorn"
# Messages a client may have queued for the application before uvicorn stops reading its socket.
WS_MAX_QUEUE = 16
WS_PING_SECONDS = 20.0
# What the application gets to finish after the drain (Daphne: --application-close-timeout).
CLOSE_TIMEOUT_SECONDS = 10


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, reading paused only when the application is
    ``config.ws_max_queue`` messages behind (instead of after every message), and a text
    message written at once when nothing stands in the way (``send_text_nowait``)."""

    def send_text_nowait(self, text: str) -> bool:
        """Write a text message now, as ``send({"type": "websocket.send", "text": …})`` does
        once it has nothing to wait for; False (nothing written) when it would wait or refuse
        (output paused, handshake not done, closing, gone): then the caller uses ``send``.
        ``agents.realtime.client_output`` uses it for the relay's frames, which saves a
        coroutine, a message dictionary and an event wait per frame."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
        ):
            return False
        self.conn.send_text(text.encode())
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def send_receive_event_to_app(self) -> None:
        if self.read_paused or self.queue.qsize() + 1 >= self.config.ws_max_queue:
            super().send_receive_event_to_app()  # queues it and pauses reading
            return
        # The parent pauses unless reading is paused already: let it believe so for this call.
        self.read_paused = True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = False


def ws_max_bytes() -> int:
    from django.conf import settings

    return int(settings.VP_WS_MAX_MESSAGE_BYTES) * 2


def uvicorn_options(
    *,
    host: str,
    port: int,
    proxy_headers: bool = False,
    forwarded_allow_ips: str = "127.0.0.1",
    access_log: bool = True,
    log_level: str = "info",
) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` for the platform."""
    return {
        "app": APPLICATION,
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": RelayWebSocketProtocol,
        "ws_max_size": ws_max_bytes(),
        "ws_max_queue": WS_MAX_QUEUE,
        "ws_ping_interval": WS_PING_SECONDS,
        "ws_ping_timeout": WS_PING_SECONDS,
        "ws_per_message_deflate": False,
        # Django answers no lifespan events; "auto" would only log that at every start.
        "lifespan": "off",
        "proxy_headers": proxy_headers,
        "forwarded_allow_ips": forwarded_allow_ips if proxy_headers else None,
        "server_header": False,
        "access_log": access_log,
        # The access log is on whatever VP_LOG_LEVEL says (Daphne's is too): a level of
        # WARNING quietens the server's own messages, not the record of requests.
        "log_config": _uvicorn_log_config(log_level),
        "log_level": None,
        "timeout_graceful_shutdown": CLOSE_TIMEOUT_SECONDS,
    }


def _uvicorn_log_config(log_level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.error"]["level"] = log_level.upper()
    config["loggers"]["uvicorn.access"]["level"] = "INFO"
    return config


def daphne_argv(
    *,
    host: str,
    port: int,
    proxy_headers: bool = False,
    access_log: bool = True,
) -> list[str]:
    """Daphne's command line (without the program name) for the platform."""
    size = str(ws_max_bytes())
    argv = [
        "-b", host, "-p", str(port),
        "--websocket-max-message-size", size,
        "--websocket-max-frame-size", size,
        "--application-close-timeout", str(CLOSE_TIMEOUT_SECONDS),
        "--ping-interval", str(int(WS_PING_SECONDS)),
    ]  # fmt: skip
    if proxy_headers:
        argv.append("--proxy-headers")
    if not access_log:
        argv += ["-v", "0"]
    return [*argv, APPLICATION]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m voiceplatform.serve", description=__doc__)
    parser.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="behind a proxy (nginx): the client's address and scheme from X-Forwarded-*",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="uvicorn: addresses trusted to set X-Forwarded-* (default 127.0.0.1)",
    )
    parser.add_argument("--no-access-log", action="store_true")
    # For measurements (bench --uvicorn-loop/--daphne-loop/--uvicorn-ws): production keeps these.
    parser.add_argument("--loop", choices=LOOPS, default="uvloop", help=argparse.SUPPRESS)
    parser.add_argument(
        "--ws", choices=("relay", "websockets-sansio"), default="relay", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--autobahn-log-args", choices=("plain", "stock"), default="plain", help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")
    if args.server == "daphne":
        if args.loop == "uvloop":
            # Daphne runs Twisted's asyncio reactor on asyncio.new_event_loop(), created when
            # daphne.server is imported: the policy has to be in place before that.
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        if args.autobahn_log_args == "plain":
            _plain_autobahn_log_arguments()
        _load_application_frozen()
        from daphne.cli import CommandLineInterface

        daphne = daphne_argv(
            host=args.host,
            port=args.port,
            proxy_headers=args.proxy_headers,
            access_log=not args.no_access_log,
        )
        sys.argv = ["daphne", *daphne]
        CommandLineInterface().run(daphne)
        return
    import uvicorn

    _load_application_frozen()
    options = uvicorn_options(
        host=args.host,
        port=args.port,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        access_log=not args.no_access_log,
        log_level=_log_level(),
    )
    options["loop"] = args.loop
    if args.ws != "relay":
        options["ws"] = args.ws
    uvicorn.run(**options)


def _load_application_frozen() -> None:
    """Import the application (the server then finds it imported) and move everything made so
    far (Django, the URL map, the catalogue: about 200,000 tracked objects) to the collector's
    permanent generation. A full collection walks every tracked object, and one comes whenever
    the long-lived objects have grown by a quarter (sessions connecting): it took 90 ms in the
    loaded process, every session's audio stalled meanwhile, and under 1 ms with them frozen
    (measured with ``gc.collect()`` after importing the application)."""
    import gc
    import importlib

    importlib.import_module(APPLICATION.partition(":")[0])
    gc.collect()
    gc.freeze()


def _plain_autobahn_log_arguments() -> None:
    """autobahn builds the arguments of a debug message on every frame it sends and every chunk
    it receives, whatever the log level (``sendData``, ``dataReceived``: ``hltype(…)``,
    ``hlval(self.peer)``: ANSI colouring through click, ~12 µs a frame measured). Its two
    WebSocket modules get plain versions of the two helpers, which only change how a debug
    message looks; the installed package is left as it is."""
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol

    for module in (protocol, twisted_websocket):
        module.hltype = _plain  # type: ignore[attr-defined]
        module.hlval = _plain  # type: ignore[attr-defined]


def _plain(value: object, *_args: object, **_kwargs: object) -> object:
    return value


def _log_level() -> str:
    level = os.environ.get("VP_LOG_LEVEL", "INFO").lower()
    return level if level in ("critical", "error", "warning", "info", "debug") else "info"


if __name__ == "__main__":
    main()
