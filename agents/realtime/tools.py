"""Server-side execution of function tools: the tenant's webhook, signed, bounded, never fatal.

A call becomes a POST of JSON ``{"tool", "arguments", "call_id", "session_id", "agent_id"}`` to
the tool's ``webhook_url`` with two headers:

* ``X-VP-Timestamp``: Unix seconds;
* ``X-VP-Signature``: ``v1=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"`` under the tenant's
  signing secret (shown in the console), so the tenant can check origin and freshness.

The request goes through :mod:`agents.realtime.outbound` (resolved once, every address checked,
the checked address dialled, no redirect followed, fully async, at most a few calls in flight
per tenant). The call has the tool's timeout (waiting for the tenant's slot included), is
retried only when it could not connect (never once the request went out), and its answer is
capped in size. Whatever happens, the model gets an output: the answer, or
``{"error": {"type": …, "message": …}}`` it can talk about.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import ssl
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from agents.realtime import outbound

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


def signatures(secrets_: tuple[str, ...], timestamp: str, body: bytes) -> str:
    """``v1=<hex>`` under each valid secret, comma-separated (two during a rotation's overlap):
    a receiver accepts the call when any of them matches the secret it holds."""
    return ",".join(signature(secret, timestamp, body) for secret in secrets_)


def error_output(kind: str, message: str) -> str:
    return json.dumps({"error": {"type": kind, "message": message}})


@dataclass
class WebhookExecutor:
    """Runs webhook tools for one session. ``tenant_id`` keys the per-tenant concurrency limit;
    ``resolver``, ``limiter`` and ``ssl_context`` default to the process's shared ones."""

    signing_secret: str
    session_id: int
    agent_id: int
    allow_private_addresses: bool = False
    # The previous secret during the overlap after a rotation (calls are signed with both).
    extra_signing_secrets: tuple[str, ...] = ()
    max_response_bytes: int = MAX_RESPONSE_BYTES
    retries: int = NETWORK_RETRIES
    tenant_id: Hashable | None = None
    resolver: outbound.Resolver | None = None
    limiter: outbound.TenantLimiter | None = None
    ssl_context: ssl.SSLContext | None = None
    client: outbound.OutboundClient = field(init=False, repr=False)

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (self.signing_secret, *self.extra_signing_secrets)

    def __post_init__(self) -> None:
        self.client = outbound.OutboundClient(
            allow_private=self.allow_private_addresses,
            resolver=self.resolver,
            limiter=self.limiter,
            max_response_bytes=self.max_response_bytes,
            ssl_context=self.ssl_context,
        )

    async def call(self, tool: dict[str, Any], *, call_id: str, arguments: str) -> ToolResult:
        started = time.monotonic()
        try:
            parsed: Any = json.loads(arguments) if arguments else {}
        except ValueError:
            parsed = arguments
        nonce = secrets.token_hex(16)
        body = json.dumps(
            {
                "tool": tool.get("name"),
                "arguments": parsed,
                "call_id": call_id,
                "session_id": self.session_id,
                "agent_id": self.agent_id,
                # Unique per delivery and signed with the body: a receiver that remembers the
                # nonces of the last 300 s (the timestamp window) refuses a replay outright.
                "nonce": nonce,
            }
        ).encode()
        timeout = float(tool.get("timeout_seconds") or DEFAULT_TIMEOUT_S)
        output, error = await self._post(
            str(tool.get("webhook_url") or ""), body, timeout, nonce=nonce
        )
        return ToolResult(
            output=output, latency_ms=round((time.monotonic() - started) * 1000), error=error
        )

    async def _post(self, url: str, body: bytes, timeout: float, *, nonce: str) -> tuple[str, str]:
        """(output, error kind or "")."""
        timestamp = str(int(time.time()))
        headers = [
            ("Content-Type", "application/json"),
            ("User-Agent", "VoicePlatform-Tools/1"),
            ("X-VP-Timestamp", timestamp),
            ("X-VP-Signature", signatures(self._secrets, timestamp, body)),
            ("X-VP-Nonce", nonce),
        ]
        try:
            response = await self.client.request(
                "POST", url, tenant=self.tenant_id, timeout=timeout, body=body,
                headers=headers, connect_retries=self.retries,
            )  # fmt: skip
        except outbound.OutboundError as error:
            return error_output(error.kind, _tool_message(error, timeout)), error.kind
        if response.status >= 400:  # the server answered: never retried
            return (
                error_output("http_error", f"the tool's server answered HTTP {response.status}"),
                "http_error",
            )
        text = response.body.decode("utf-8", errors="replace")
        try:
            json.loads(text)
        except ValueError:
            text = json.dumps({"result": text})
        return text, ""


def _tool_message(error: outbound.OutboundError, timeout: float) -> str:
    if error.kind == "timeout":
        return f"the tool did not answer within {timeout:g} s"
    if error.kind == "network_error":
        return f"could not reach the tool: {error.message}"
    if error.kind == "response_too_large":
        return f"the tool's answer {error.message.removeprefix('the answer ')}"
    return f"the tool's webhook: {error.message}"
