"""A minimal WebSocket client protocol on raw asyncio, for the load generator only.

The ``websockets`` client costs tens of microseconds of Python per message; at a few hundred
sessions (10,000+ frames/s each way) the load generator would then need more CPU than the
server under test, on the same machine. This protocol does just what the benchmark needs:
the opening handshake, unfragmented or fragmented text frames in, masked text frames out (the
mask key is zero, which RFC 6455 allows: servers unmask the same way whatever the key), ping ->
pong, and the closing handshake. It is not a general-purpose client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ZERO_MASK = b"\x00\x00\x00\x00"


class HandshakeError(Exception):
    def __init__(self, status: int, head: str, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {head.splitlines()[0] if head else ''} {body[:300]!r}")
        self.status = status
        self.body = body


def encode_text(text: str) -> bytes:
    """One FIN text frame, masked with the zero key."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        head = bytes((0x81, 0x80 | length))
    elif length < 65536:
        head = bytes((0x81, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + _ZERO_MASK + payload


def _control(opcode: int, payload: bytes = b"") -> bytes:
    return bytes((0x80 | opcode, 0x80 | len(payload))) + _ZERO_MASK + payload


class ClientProtocol(asyncio.Protocol):
    def __init__(self, request: bytes, key: str) -> None:
        self.request = request
        self.accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.handshaken = False
        self.fragments: list[bytes] | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        # Frames that arrive before the caller sets ``on_text`` (often in the same segment as
        # the 101 response) wait in ``pending``.
        self.pending: list[str] = []
        self.on_text: Callable[[str], None] = self.pending.append
        self.on_close: Callable[[], None] = lambda: None

    # asyncio callbacks ------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1")
            rest = bytes(buffer[end + 4 :])
            del buffer[:]
            status_line = head.split("\r\n", 1)[0]
            parts = status_line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            headers = {}
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if status != 101 or headers.get("sec-websocket-accept") != self.accept:
                if not self.opened.done():
                    self.opened.set_exception(HandshakeError(status, head, rest))
                self.transport.close()
                return
            self.handshaken = True
            if not self.opened.done():
                self.opened.set_result(None)
            if not rest:
                return
            buffer += rest
        self._frames()

    # frames -----------------------------------------------------------------------------
    def _frames(self) -> None:
        buffer = self.buffer
        size = len(buffer)
        at = 0
        while size - at >= 2:
            b0 = buffer[at]
            b1 = buffer[at + 1]
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if size - at < 4:
                    break
                length = int.from_bytes(buffer[at + 2 : at + 4], "big")
                header = 4
            elif length == 127:
                if size - at < 10:
                    break
                length = int.from_bytes(buffer[at + 2 : at + 10], "big")
                header = 10
            mask = None
            if b1 & 0x80:  # servers do not mask, but be lenient
                if size - at < header + 4:
                    break
                mask = bytes(buffer[at + header : at + header + 4])
                header += 4
            end = at + header + length
            if end > size:
                break
            payload = bytes(buffer[at + header : end])
            at = end
            if mask is not None:  # rare: a slow but correct unmask
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == 1:
                if fin:
                    self.on_text(payload.decode())
                else:
                    self.fragments = [payload]
            elif opcode == 0 and self.fragments is not None:
                self.fragments.append(payload)
                if fin:
                    self.on_text(b"".join(self.fragments).decode())
                    self.fragments = None
            elif opcode == 2:
                pass
            elif opcode == 9:
                self.transport.write(_control(0xA, payload[:125]))
            elif opcode == 8:
                if len(payload) >= 2:
                    self.close_code = int.from_bytes(payload[:2], "big")
                    self.close_reason = payload[2:].decode(errors="replace")
                else:
                    self.close_code = 1005
                if not self.transport.is_closing():
                    self.transport.write(_control(0x8, payload[:2]))
                    self.transport.close()
        if at:
            del buffer[:at]

    # API --------------------------------------------------------------------------------
    def send_text(self, text: str) -> None:
        self.transport.write(encode_text(text))

    async def close(self, code: int = 1000, timeout: float = 2.0) -> None:
        if self.transport is None:
            return
        if not self.transport.is_closing():
            self.transport.write(_control(0x8, code.to_bytes(2, "big")))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            self.transport.abort()


async def connect(host: str, port: int, path: str, headers: dict[str, str], timeout: float):
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(lambda: ClientProtocol(request, key), host, port), timeout
    )
    try:
        await asyncio.wait_for(asyncio.shield(protocol.opened), timeout)
    except BaseException:
        protocol.transport.abort()
        raise
    return protocol
