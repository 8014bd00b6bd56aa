"""The outbound client for tenant-supplied URLs: deny list, one resolution pinned to the
connection, TLS against the name, per-tenant slots; MCP URLs checked at save and at session
start."""

import asyncio
import datetime
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ValidationError
from django.urls import reverse

from agents.configuration import agent_create, agent_mcp_server_add
from agents.realtime.outbound import (
    OutboundClient,
    OutboundError,
    TenantLimiter,
    address_denied,
)
from agents.selectors import policy_for_agent

DENIED = [
    "0.0.0.0", "10.1.2.3", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.8.9.10",
    "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.170", "192.0.2.1",
    "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.51.100.1", "203.0.113.1", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::", "::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
    "::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "2002:7f00:1::1",
    "2002:a9fe:a9fe::1", "2001::1", "2001:db8::1", "3fff::1", "100::1", "fc00::1", "fd00::1",
    "fd00:ec2::254", "fe80::1", "fec0::1", "ff02::1",
]  # fmt: skip
ALLOWED = ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


class Resolver:
    """Answers from a script, one answer per call (the last one repeats); counts calls."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    async def __call__(self, host, port):
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


@pytest.mark.parametrize("address", DENIED)
async def test_every_denied_range_is_refused_before_any_connection(address):
    assert address_denied(address) != ""
    resolver = Resolver([address])
    client = OutboundClient(resolver=resolver, limiter=TenantLimiter(4))
    with pytest.raises(OutboundError) as refused:
        await client.request("POST", "http://hooks.test/x", tenant=1, timeout=5)
    assert refused.value.kind == "forbidden_address"
    assert resolver.calls == [("hooks.test", 80)]


async def test_public_addresses_pass_but_one_denied_among_them_refuses_the_host():
    assert {address: address_denied(address) for address in ALLOWED} == dict.fromkeys(ALLOWED, "")
    client = OutboundClient(resolver=Resolver(["8.8.8.8", "10.0.0.1"]), limiter=TenantLimiter(4))
    with pytest.raises(OutboundError) as refused:
        await client.request("GET", "https://hooks.test/", tenant=1, timeout=5)
    assert refused.value.kind == "forbidden_address"


@pytest.mark.parametrize(
    "url",
    [
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./",
        "http://localhost:8000/",
        "http://admin.localhost/",
        "http://instance-data/latest/",
    ],
)
async def test_metadata_and_local_names_are_refused_without_a_lookup(url):
    resolver = Resolver(["8.8.8.8"])
    client = OutboundClient(resolver=resolver, limiter=TenantLimiter(4))
    with pytest.raises(OutboundError) as refused:
        await client.request("GET", url, tenant=1, timeout=5)
    assert (refused.value.kind, resolver.calls) == ("forbidden_address", [])


class RecordingServer:
    """A plain HTTP server on one loopback address; records (path, Host) per request."""

    def __init__(self, address="127.0.0.1", port=0):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.path, self.headers["Host"]))
                payload = f'{{"served_by": "{address}"}}'.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


async def test_the_name_is_resolved_once_and_the_checked_address_is_the_one_dialled():
    # DNS rebinding: the first answer is checked, a second lookup would answer another
    # address. The platform must connect to the first answer and never ask again.
    first = RecordingServer("127.0.0.1")
    try:
        rebound = RecordingServer("127.0.0.2", first.port)
    except OSError:
        first.close()
        pytest.skip("127.0.0.2 is not usable here")
    try:
        resolver = Resolver(["127.0.0.1"], ["127.0.0.2"])
        client = OutboundClient(allow_private=True, resolver=resolver, limiter=TenantLimiter(4))
        response = await client.request(
            "POST", f"http://hooks.test:{first.port}/hook", tenant=1, timeout=5, body=b"{}",
            connect_retries=2,
        )  # fmt: skip
        assert (response.status, response.address) == (200, "127.0.0.1")
        assert response.body == b'{"served_by": "127.0.0.1"}'
        assert resolver.calls == [("hooks.test", first.port)]
        assert first.requests == [("/hook", f"hooks.test:{first.port}")]
        assert rebound.requests == []
    finally:
        first.close()
        rebound.close()


def _certificate(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


async def test_https_dials_the_checked_address_but_verifies_and_names_the_host(tmp_path):
    cert_pem, key_pem = _certificate("hooks.test")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    seen = {"sni": [], "host": []}
    server_context.sni_callback = lambda _sock, name, _ctx: seen["sni"].append(name)

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        seen["host"] += [line.split(": ", 1)[1] for line in lines if line.startswith("Host: ")]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context(cadata=cert_pem.decode())
    client = OutboundClient(
        allow_private=True, resolver=Resolver(["127.0.0.1"]), limiter=TenantLimiter(4),
        ssl_context=trusting,
    )  # fmt: skip
    try:
        response = await client.request("GET", f"https://hooks.test:{port}/", tenant=1, timeout=5)
        assert (response.status, response.body, response.address) == (200, b"ok", "127.0.0.1")
        assert seen == {"sni": ["hooks.test"], "host": [f"hooks.test:{port}"]}
        # The same address under another name: the certificate does not match, no answer.
        with pytest.raises(OutboundError) as refused:
            await client.request("GET", f"https://other.test:{port}/", tenant=1, timeout=5)
        assert refused.value.kind == "network_error"
        assert "certificate" in refused.value.message.lower()
        assert seen["host"] == [f"hooks.test:{port}"]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_slot_stays_taken_while_a_timed_out_lookup_still_runs():
    # A tenant whose name server hangs cannot pile up resolver threads beyond its own slots.
    answer = asyncio.Event()

    async def hanging_resolver(host, port):
        await answer.wait()
        return ["8.8.8.8"]

    limiter = TenantLimiter(2)
    client = OutboundClient(resolver=hanging_resolver, limiter=limiter)
    with pytest.raises(OutboundError) as late:
        await client.request("GET", "https://slow-dns.test/", tenant="A", timeout=0.1)
    assert late.value.kind == "timeout"
    assert (limiter.in_flight("A"), limiter.in_flight("B")) == (1, 0)
    answer.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert limiter.in_flight("A") == 0


# --- MCP server URLs -----------------------------------------------------------------------------

FAKE_DNS = {"mcp.public.test": "93.184.216.34", "mcp.rebound.test": "93.184.216.35",
            "mcp.internal.test": "10.0.0.7"}  # fmt: skip


@pytest.fixture
def fake_dns(monkeypatch):
    table = dict(FAKE_DNS)
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port or 443))]
        if str(host).endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def agent(world):
    return agent_create(
        tenant=world.tenant_a, actor=None, fields={"name": "A", "provider": "local"}
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://mcp.internal.test/sse", "private, local or reserved address"),
        ("https://169.254.169.254/latest", "private, local or reserved address"),
        ("https://[::ffff:127.0.0.1]/sse", "private, local or reserved address"),
        ("https://100.64.0.1/sse", "private, local or reserved address"),
        ("https://metadata.google.internal/", "private, local or reserved address"),
        ("https://nowhere.test/sse", "could not be resolved"),
    ],
)
def test_mcp_urls_are_checked_when_saved(agent, settings, fake_dns, url, says):
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = False
    before = agent.live_version_id
    with pytest.raises(ValidationError) as refused:
        agent_mcp_server_add(agent=agent, actor=None, server={"label": "crm", "url": url})
    assert says in refused.value.message_dict["url"][0]
    agent.refresh_from_db()
    assert (agent.mcp_servers, agent.live_version_id) == ([], before)
    agent_mcp_server_add(
        agent=agent, actor=None, server={"label": "ok", "url": "https://mcp.public.test/sse"}
    )
    agent.refresh_from_db()
    assert [server["url"] for server in agent.mcp_servers] == ["https://mcp.public.test/sse"]


def test_the_console_shows_why_an_mcp_url_is_refused(client, world, agent, settings, fake_dns):
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = False
    client.force_login(world.owner_a)
    url = reverse("agent-tools", args=["tenant-a", agent.pk])
    response = client.post(
        url, {"form": "mcp", "label": "crm", "url": "https://mcp.internal.test/sse"}
    )
    assert response.status_code == 200
    assert b"A remote MCP server must be reachable on the public internet." in response.content
    agent.refresh_from_db()
    assert agent.mcp_servers == []


def test_a_session_leaves_out_an_mcp_server_whose_name_now_points_inside(
    agent, settings, fake_dns, caplog
):
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = False
    for label, host in (("public", "mcp.public.test"), ("moved", "mcp.rebound.test")):
        agent.refresh_from_db()
        agent_mcp_server_add(
            agent=agent, actor=None,
            server={"label": label, "url": f"https://{host}/sse", "authorization": "Bearer t-1234"},
        )  # fmt: skip
    agent.refresh_from_db()
    assert [s["label"] for s in policy_for_agent(agent=agent, channel="api").mcp_servers] == [
        "public", "moved",
    ]  # fmt: skip
    fake_dns["mcp.rebound.test"] = "127.0.0.1"
    with caplog.at_level(logging.WARNING, logger="agents.selectors"):
        policy = policy_for_agent(agent=agent, channel="api")
    assert [server["label"] for server in policy.mcp_servers] == ["public"]
    assert policy.mcp_servers[0]["authorization"] == "Bearer t-1234"
    [warning] = [r for r in caplog.records if r.name == "agents.selectors"]
    assert "'moved'" in warning.getMessage() and "mcp.rebound.test" in warning.getMessage()
    assert "forbidden_address" in warning.getMessage()
    assert "t-1234" not in warning.getMessage()
    # Embedded mode (private addresses allowed for local testing) keeps it.
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = True
    labels = [s["label"] for s in policy_for_agent(agent=agent, channel="api").mcp_servers]
    assert labels == ["public", "moved"]
