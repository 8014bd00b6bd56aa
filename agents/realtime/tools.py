"""Server-side execution of function tools: the tenant's webhook, signed, bounded, never fatal.

A call becomes a POST of JSON ``{"tool", "arguments", "call_id", "session_id", "agent_id"}`` to
the tool's ``webhook_url`` with two headers:

* ``X-VP-Timestamp``: Unix seconds;
* ``X-VP-Signature``: ``v1=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"`` under the tenant's
  signing secret (shown in the console), so the tenant can check origin and freshness.

The call has the tool's timeout, is retried only on network errors (never after the server
answered), and its answer is capped in size. Whatever happens, the model gets an output: the
answer, or ``{"error": {"type": …, "message": …}}`` it can talk about.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 * 1024
NETWORK_RETRIES = 2
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ToolResult:
    output: str
    latency_ms: int
    error: str = ""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def error_output(kind: str, message: str) -> str:
    return json.dumps({"error": {"type": kind, "message": message}})


class ForbiddenAddress(Exception):
    pass


def _check_address(url: str, *, allow_private: bool) -> None:
    """Refuse webhooks aimed at this network (loopback, private, link-local) unless allowed."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as error:
        raise urllib.error.URLError(error) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_reserved
        ):
            raise ForbiddenAddress(f"{host} resolves to a private address")


@dataclass
class WebhookExecutor:
    signing_secret: str
    session_id: int
    agent_id: int
    allow_private_addresses: bool = False
    max_response_bytes: int = MAX_RESPONSE_BYTES
    retries: int = NETWORK_RETRIES

    async def call(self, tool: dict[str, Any], *, call_id: str, arguments: str) -> ToolResult:
        started = time.monotonic()
        try:
            parsed: Any = json.loads(arguments) if arguments else {}
        except ValueError:
            parsed = arguments
        body = json.dumps(
            {
                "tool": tool.get("name"),
                "arguments": parsed,
                "call_id": call_id,
                "session_id": self.session_id,
                "agent_id": self.agent_id,
            }
        ).encode()
        timeout = float(tool.get("timeout_seconds") or DEFAULT_TIMEOUT_S)
        output, error = await asyncio.to_thread(
            self._post, tool.get("webhook_url", ""), body, timeout
        )
        return ToolResult(
            output=output, latency_ms=round((time.monotonic() - started) * 1000), error=error
        )

    def _post(self, url: str, body: bytes, timeout: float) -> tuple[str, str]:
        """(output, error kind or "") — runs in a worker thread."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return error_output(
                    "timeout", f"the tool did not answer within {timeout:g} s"
                ), "timeout"
            timestamp = str(int(time.time()))
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "VoicePlatform-Tools/1",
                    "X-VP-Timestamp": timestamp,
                    "X-VP-Signature": signature(self.signing_secret, timestamp, body),
                },
            )
            try:
                _check_address(url, allow_private=self.allow_private_addresses)
                with urllib.request.urlopen(request, timeout=remaining) as response:  # noqa: S310
                    data = response.read(self.max_response_bytes + 1)
            except ForbiddenAddress as error:
                return error_output("forbidden_address", str(error)), "forbidden_address"
            except urllib.error.HTTPError as error:  # the server answered: never retried
                return (
                    error_output("http_error", f"the tool's server answered HTTP {error.code}"),
                    "http_error",
                )
            except TimeoutError:
                return (
                    error_output("timeout", f"the tool did not answer within {timeout:g} s"),
                    "timeout",
                )
            except (urllib.error.URLError, OSError, ValueError) as error:
                attempt += 1
                if attempt > self.retries:
                    reason = getattr(error, "reason", error)
                    return error_output(
                        "network_error", f"could not reach the tool: {reason}"
                    ), "network_error"
                time.sleep(min(0.2 * attempt, max(deadline - time.monotonic(), 0)))
                continue
            if len(data) > self.max_response_bytes:
                return (
                    error_output(
                        "response_too_large",
                        f"the tool's answer exceeded {self.max_response_bytes} bytes",
                    ),
                    "response_too_large",
                )
            text = data.decode("utf-8", errors="replace")
            try:
                json.loads(text)
            except ValueError:
                text = json.dumps({"result": text})
            return text, ""
