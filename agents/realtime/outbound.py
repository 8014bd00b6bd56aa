"""Outbound HTTP to tenant-supplied URLs (tool webhooks, MCP servers, later callbacks).

A tenant chooses the URL, so a request must not become a way into this network (SSRF) and one
tenant's slow server must not hold up anybody else. Every request here:

* resolves the host **once** (on a small dedicated thread pool, never the event loop's default
  executor, which the upstream connections' own DNS lookups share);
* checks **every** resolved address against :func:`address_denied` (loopback, private,
  link-local, CGNAT, multicast, reserved, documentation ranges, IPv4 embedded in IPv6, ...) and
  refuses well-known metadata host names before resolving them;
* connects to the checked address itself (the name is never resolved again, so DNS rebinding
  cannot swap the address between check and connect) while the ``Host`` header, TLS SNI and
  certificate verification still use the host name;
* follows **no** redirect: a 3xx answer is the error ``redirect_refused``;
* is bounded: total time (queueing, resolution, connect and answer), answer size, and a
  per-tenant number of requests in flight (:class:`TenantLimiter`).

``allow_private`` turns the address checks off (the embedded mode's local testing); the
redirect rule, the limits and the pinning stay.

HTTP itself is spoken by ``httpcore2`` (already installed as the ``openai`` SDK's transport)
through a network backend that only ever dials the checked address: a small, well-tested HTTP/1.1
client with no redirects, proxies, cookies or content decoding of its own to switch off.

Plain asyncio: no Django import (the realtime core must not depend on it). Django-side code
configures the defaults once with :func:`configure`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (text); injectable for tests.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

DEFAULT_CONCURRENCY_PER_TENANT = 4
DEFAULT_RESOLVER_THREADS = 8
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "VoicePlatform-Outbound/1"

# Names that reach a cloud's instance metadata service. Their addresses are denied anyway
# (169.254.169.254, fd00:ec2::254, 100.100.100.200 ...); refusing the name needs no lookup.
METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "localhost",
    }
)

_DENIED_V4 = tuple(
    (ipaddress.IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "this-network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # 255.255.255.255 (broadcast) included
    )
)
_DENIED_V6 = tuple(
    (ipaddress.IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible"),  # deprecated; no legitimate server lives there
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments"),  # Teredo, benchmarking, ORCHID
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64 or 6to4), if any."""
    if address in _IPV4_MAPPED or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None


def address_denied(address: str | IPAddress) -> str:
    """Why an outbound request may not go to ``address`` ("" when it may).

    The tables above are the deny list (written out, so it does not change with the Python
    patch version); ``ipaddress``'s own flags are a second net under them. An IPv4 address
    embedded in IPv6 (``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is judged
    as that IPv4 address, since that is where the packets end up.
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "scoped (link-local)"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = address_denied(embedded)
            return f"embeds {embedded}: {reason}" if reason else ""
        table: Iterable[tuple[Any, str]] = _DENIED_V6
    else:
        table = _DENIED_V4
    for network, reason in table:
        if ip in network:
            return reason
    for flag in ("is_loopback", "is_private", "is_link_local", "is_multicast", "is_reserved",
                 "is_unspecified", "is_site_local"):  # fmt: skip
        if getattr(ip, flag, False):
            return flag.removeprefix("is_").replace("_", "-")
    return ""


def hostname_denied(host: str) -> str:
    name = host.lower().rstrip(".")
    if name in METADATA_HOSTNAMES or name.endswith(".localhost"):
        return "a metadata or local host name"
    return ""


class OutboundError(Exception):
    """A request that did not produce an answer; ``kind`` is a stable error code."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA) form, no brackets
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str, *, allow_private: bool, require_https: bool = False) -> Target:
    """Check a URL's shape (scheme, host, port) and name; raises ``OutboundError``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise OutboundError("invalid_url", "the URL is not valid") from None
    schemes = ("https",) if require_https else ("http", "https")
    if parts.scheme not in schemes:
        raise OutboundError("invalid_url", f"the URL must start with {' or '.join(schemes)}://")
    if not parts.hostname:
        raise OutboundError("invalid_url", "the URL has no host")
    if parts.username or parts.password:
        raise OutboundError("invalid_url", "credentials in the URL are not allowed")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise OutboundError("invalid_url", "the URL's host name is not valid") from None
    if not allow_private and (reason := hostname_denied(host)):
        raise OutboundError("forbidden_address", f"{host} is {reason}: not allowed")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def check_addresses(host: str, addresses: Sequence[str]) -> list[str]:
    """The addresses, in order, if every one is allowed; else ``forbidden_address``."""
    if not addresses:
        raise OutboundError("network_error", f"{host} did not resolve to any address")
    for address in addresses:
        if reason := address_denied(address):
            raise OutboundError(
                "forbidden_address", f"{host} resolves to a denied address ({reason})"
            )
    return list(addresses)


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


# --- resolution --------------------------------------------------------------------------------


class ThreadedResolver:
    """``getaddrinfo`` on its own small pool, so a slow name server never occupies the event
    loop's default executor (where the upstream's connects resolve their names)."""

    def __init__(self, threads: int = DEFAULT_RESOLVER_THREADS):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vp-outbound-dns")

    @staticmethod
    def _lookup(host: str, port: int) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise OutboundError("network_error", f"could not resolve {host}: {error}") from None
        addresses: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in addresses:
                addresses.append(address)
        return addresses

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._lookup, host, port)

    def submit(self, host: str, port: int) -> Future[list[str]]:
        """For synchronous (Django-side) callers: the lookup, running on this pool."""
        return self._pool.submit(self._lookup, host, port)


# --- per-tenant limits -------------------------------------------------------------------------


class _Entry:
    __slots__ = ("semaphore", "users")

    def __init__(self, size: int):
        self.semaphore = asyncio.Semaphore(size)
        self.users = 0  # holders and waiters; the entry goes when it drops to 0


class Lease:
    """One of a tenant's slots. Released when the request ends, or, if a lookup thread is
    still running (a request that timed out while resolving), when that thread finishes, so a
    tenant with a hanging name server holds at most its own share of the resolver's threads."""

    def __init__(self, release: Callable[[], None]):
        self._release = release
        self._after: asyncio.Future[Any] | None = None
        self._done = False

    def keep_until(self, future: asyncio.Future[Any]) -> None:
        self._after = future

    def release(self) -> None:
        if self._after is not None and not self._after.done():
            self._after.add_done_callback(lambda _future: self.release())
            self._after = None
            return
        if not self._done:
            self._done = True
            self._release()


class TenantLimiter:
    """At most ``per_tenant`` outbound requests in flight per tenant; the rest of that tenant's
    requests wait (inside their own time budget) while other tenants' go ahead."""

    def __init__(self, per_tenant: int = DEFAULT_CONCURRENCY_PER_TENANT):
        if per_tenant < 1:
            raise ValueError("per_tenant must be at least 1")
        self.per_tenant = per_tenant
        # asyncio primitives belong to one loop: one table per loop.
        self._entries: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, _Entry]
        ] = weakref.WeakKeyDictionary()

    def _table(self) -> dict[Hashable, _Entry]:
        return self._entries.setdefault(asyncio.get_running_loop(), {})

    def in_flight(self, tenant: Hashable) -> int:
        entry = self._table().get(tenant)
        return 0 if entry is None else self.per_tenant - entry.semaphore._value

    def waiting(self, tenant: Hashable) -> int:
        entry = self._table().get(tenant)
        return 0 if entry is None else entry.users - self.in_flight(tenant)

    async def acquire(self, tenant: Hashable) -> Lease:
        table = self._table()
        entry = table.get(tenant)
        if entry is None:
            entry = table[tenant] = _Entry(self.per_tenant)
        entry.users += 1

        def forget() -> None:
            entry.users -= 1
            if entry.users == 0 and table.get(tenant) is entry:
                del table[tenant]

        try:
            await entry.semaphore.acquire()
        except BaseException:
            forget()
            raise

        def release() -> None:
            entry.semaphore.release()
            forget()

        return Lease(release)


# --- the client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    body: bytes
    address: str  # the address actually connected to


class _PinnedBackend(httpcore2.AsyncNetworkBackend):
    """Dials only the checked address, whatever name the request carries (the name still goes
    into the Host header and TLS SNI/verification)."""

    def __init__(self, host: str, address: str):
        self._host, self._address = host, address
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        if host != self._host:  # nothing else may be dialled (no redirects, no proxies)
            raise httpcore2.ConnectError(f"refusing to connect to {host}")
        return await self._inner.connect_tcp(
            self._address, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )  # fmt: skip

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """One verifying context for the process (loading the CA store takes milliseconds)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpcore2.default_ssl_context()
        return _ssl_context


class OutboundClient:
    """Requests to tenant-supplied URLs; see the module's docstring for the rules."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        limiter: TenantLimiter | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.allow_private = allow_private
        self.resolver = resolver or shared_resolver()
        self.limiter = limiter or shared_limiter()
        self.max_response_bytes = max_response_bytes
        self._ssl_context = ssl_context

    async def resolve(self, target: Target, lease: Lease | None = None) -> list[str]:
        """Resolve once and check every address (an IP literal needs no lookup)."""
        literal = _literal(target.host)
        if literal is not None:
            addresses: Sequence[str] = [literal]
        else:
            lookup = asyncio.ensure_future(self.resolver(target.host, target.port))
            try:
                addresses = await asyncio.shield(lookup)
            except asyncio.CancelledError:
                if lease is not None:
                    lease.keep_until(lookup)
                lookup.add_done_callback(_consume_exception)
                raise
        if self.allow_private:
            if not addresses:
                raise OutboundError("network_error", f"{target.host} did not resolve")
            return list(addresses)
        return check_addresses(target.host, addresses)

    async def request(
        self,
        method: str,
        url: str,
        *,
        tenant: Hashable,
        timeout: float,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        connect_retries: int = 0,
    ) -> OutboundResponse:
        """One request, all of it (waiting for the tenant's slot included) within ``timeout``.

        Only failures to connect are retried (``connect_retries`` more rounds over the
        resolved addresses): once the request has been sent it is never sent again.
        Raises ``OutboundError``; any HTTP status other than 3xx is returned.
        """
        target = parse_url(url, allow_private=self.allow_private)
        lease: Lease | None = None
        try:
            async with asyncio.timeout(timeout):
                lease = await self.limiter.acquire(tenant)
                addresses = await self.resolve(target, lease)
                return await self._send(target, addresses, method, body, headers, connect_retries)
        except TimeoutError:
            raise OutboundError("timeout", f"no answer within {timeout:g} s") from None
        finally:
            if lease is not None:
                lease.release()

    async def _send(
        self,
        target: Target,
        addresses: list[str],
        method: str,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        connect_retries: int,
    ) -> OutboundResponse:
        given = {name.lower() for name, _ in headers}
        defaults = [("User-Agent", USER_AGENT), ("Accept-Encoding", "identity")]
        request_headers = [
            ("Host", target.host_header),
            *[(name, value) for name, value in defaults if name.lower() not in given],
            ("Connection", "close"),
            *[(name, value) for name, value in headers if name.lower() != "host"],
        ]
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            request_headers.append(("Content-Length", str(len(body))))
        url = httpcore2.URL(
            scheme=target.scheme.encode(), host=target.host.encode(), port=target.port,
            target=target.path.encode(),
        )  # fmt: skip
        failure = ""
        for attempt in range(connect_retries + 1):
            if attempt:
                await asyncio.sleep(0.2 * attempt)
            for address in addresses:
                try:
                    return await self._send_to(address, target, method, url, request_headers, body)
                except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as error:
                    failure = str(error) or type(error).__name__
        raise OutboundError("network_error", failure or "could not connect")

    async def _send_to(
        self,
        address: str,
        target: Target,
        method: str,
        url: httpcore2.URL,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> OutboundResponse:
        pool = httpcore2.AsyncConnectionPool(
            ssl_context=(self._ssl_context or default_ssl_context())
            if target.scheme == "https"
            else None,
            max_connections=1,
            max_keepalive_connections=0,
            retries=0,
            network_backend=_PinnedBackend(target.host, address),
        )
        async with pool:
            try:
                async with pool.stream(method, url, headers=headers, content=body) as response:
                    if 300 <= response.status < 400:
                        raise OutboundError(
                            "redirect_refused",
                            f"the server answered HTTP {response.status} (a redirect); "
                            "redirects are not followed",
                        )
                    data = bytearray()
                    async for chunk in response.aiter_stream():
                        data += chunk
                        if len(data) > self.max_response_bytes:
                            raise OutboundError(
                                "response_too_large",
                                f"the answer exceeded {self.max_response_bytes} bytes",
                            )
                    return OutboundResponse(response.status, bytes(data), address)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout):
                raise
            except (httpcore2.NetworkError, httpcore2.ProtocolError, OSError) as error:
                # The request may have reached the server: reported, never re-sent.
                detail = str(error) or type(error).__name__
                raise OutboundError("network_error", detail) from None
            except httpcore2.TimeoutException:
                raise TimeoutError from None


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


# --- process-wide defaults ---------------------------------------------------------------------

_defaults = {
    "concurrency_per_tenant": DEFAULT_CONCURRENCY_PER_TENANT,
    "resolver_threads": DEFAULT_RESOLVER_THREADS,
}
_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()


def configure(*, concurrency_per_tenant: int, resolver_threads: int) -> None:
    """Set the process's limits (called once at start-up from Django settings)."""
    with _shared_lock:
        _defaults.update(
            concurrency_per_tenant=concurrency_per_tenant, resolver_threads=resolver_threads
        )
        _shared.clear()


def shared_limiter() -> TenantLimiter:
    with _shared_lock:
        if "limiter" not in _shared:
            _shared["limiter"] = TenantLimiter(_defaults["concurrency_per_tenant"])
        return _shared["limiter"]


def shared_resolver() -> ThreadedResolver:
    with _shared_lock:
        if "resolver" not in _shared:
            _shared["resolver"] = ThreadedResolver(_defaults["resolver_threads"])
        return _shared["resolver"]


def urls_check_blocking(
    urls: Sequence[str], *, allow_private: bool, require_https: bool = True, timeout: float = 3.0
) -> list[OutboundError | None]:
    """Check URLs for a synchronous caller: shape, name, and (unless private addresses are
    allowed) every address each resolves to now. One answer per URL (None: allowed); the
    lookups run side by side on the resolver's pool and all end within ``timeout`` (a lookup
    that does not is an error: fail closed)."""
    answers: list[OutboundError | None] = [None] * len(urls)
    lookups: dict[int, tuple[str, Future[list[str]]]] = {}
    for index, url in enumerate(urls):
        try:
            target = parse_url(url, allow_private=allow_private, require_https=require_https)
        except OutboundError as error:
            answers[index] = error
            continue
        if allow_private:
            continue
        literal = _literal(target.host)
        if literal is not None:
            answers[index] = _check_or_error(target.host, [literal])
        else:
            lookups[index] = (target.host, shared_resolver().submit(target.host, target.port))
    deadline = time.monotonic() + timeout
    for index, (host, future) in lookups.items():
        try:
            addresses = future.result(timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            answers[index] = OutboundError("timeout", f"resolving {host} took over {timeout:g} s")
        except OutboundError as error:
            answers[index] = error
        else:
            answers[index] = _check_or_error(host, addresses)
    return answers


def _check_or_error(host: str, addresses: Sequence[str]) -> OutboundError | None:
    try:
        check_addresses(host, addresses)
    except OutboundError as error:
        return error
    return None


__all__ = [
    "OutboundClient",
    "OutboundError",
    "OutboundResponse",
    "Resolver",
    "Target",
    "TenantLimiter",
    "ThreadedResolver",
    "address_denied",
    "check_addresses",
    "configure",
    "hostname_denied",
    "parse_url",
    "shared_limiter",
    "shared_resolver",
    "urls_check_blocking",
]
