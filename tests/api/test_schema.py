"""The OpenAPI schema matches the server: Schemathesis drives every read endpoint and the safe
writes from the schema alone (generated valid and invalid requests, in process through the WSGI
application) and checks each answer's status, media type, headers and body against it.

Schemathesis rather than validating our own tests' answers: it makes requests we did not think
of (odd strings in paths and queries, missing fields, wrong types), which is where a schema and a
server drift apart. It runs in-process (no server, no sockets), a bounded number of examples per
operation, derandomized so a run is repeatable.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from agents.configuration import agent_create
from tenants import services

# Writes that are safe in a test database; the MCP server door resolves the host it is given
# (DNS), so generated URLs would wait on the resolver: it is tested in test_agents.py.
SAFE_WRITES = {
    ("POST", "/api/v1/agents"),
    ("PATCH", "/api/v1/agents/{agent_id}"),
    ("POST", "/api/v1/agents/{agent_id}/archive"),
    ("POST", "/api/v1/agents/{agent_id}/restore"),
    ("POST", "/api/v1/agents/{agent_id}/versions/{number}/publish"),
    ("POST", "/api/v1/agents/{agent_id}/tools"),
    ("PUT", "/api/v1/agents/{agent_id}/tools/{name}"),
    ("DELETE", "/api/v1/agents/{agent_id}/tools/{name}"),
    ("POST", "/api/v1/widget_keys"),
    ("POST", "/api/v1/widget_keys/{widget_key_id}/revoke"),
}


# Rules across fields, or about a value's content, that JSON Schema cannot say: a model must be
# one of its kind's, a translation agent needs a target language, analysis_schema must itself be
# a valid object schema, tool parameters a valid JSON Schema, origins real origins, a usage
# range must end after it starts, a session cursor must be one the API gave. Schema-valid
# requests can break them and rightly get a 400 (with the field in ``param``); every other
# check still runs on these operations.
CROSS_FIELD_RULES = {
    ("POST", "/api/v1/agents"),
    ("PATCH", "/api/v1/agents/{agent_id}"),
    ("POST", "/api/v1/agents/{agent_id}/tools"),
    ("PUT", "/api/v1/agents/{agent_id}/tools/{name}"),
    ("POST", "/api/v1/widget_keys"),
    ("GET", "/api/v1/usage"),
    ("GET", "/api/v1/sessions"),
}


# Loaded when the module is collected (the schema endpoint reads no database). Schemathesis's
# lazy loader (pytest.from_fixture) does not work with pytest 9 (it sets a private node id).
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())


# The key of the running test (made in its database); Schemathesis asks for it per request,
# so it knows which requests carry credentials (and may test ones without).
CURRENT_KEY: dict[str, str] = {}


@schema.auth(refresh_interval=None)  # a new key per test: never cached
class BearerKey:
    def get(self, case, context):
        return CURRENT_KEY.get("raw", "vp_live_none")  # collection asks too, before any test

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(autouse=True)
def _connections_kept_across_requests():
    """Schemathesis calls the WSGI app itself, whose request signals close the database
    connection after each request (Django's test client turns that off). Inside the test's
    transaction on PostgreSQL the next query would then need a new connection and fail: keep
    the connection, as the test client does."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def raw_key(world):
    agent_create(tenant=world.tenant_a, actor=None, fields={"name": "Support"})
    _, raw = services.api_key_issue(tenant=world.tenant_a, name="schema")
    CURRENT_KEY["raw"] = raw
    yield raw
    CURRENT_KEY.clear()


def _in_scope(ctx) -> bool:
    operation = ctx.operation
    return operation.method.upper() == "GET" or (
        (operation.method.upper(), operation.path) in SAFE_WRITES
    )


@schema.include(_in_scope).parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_server_answers_as_its_schema_says(case, raw_key, db):
    excluded = []
    if (case.operation.method.upper(), case.operation.path) in CROSS_FIELD_RULES:
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)
