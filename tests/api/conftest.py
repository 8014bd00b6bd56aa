"""The REST API's fixtures: a key of tenant A (all scopes), of tenant B, and a JSON client."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from agents.configuration import agent_create
from tenants import services


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any
    content: bytes


class ApiClient:
    """Django's test client speaking JSON with a Bearer key (the schema test checks each answer)."""

    def __init__(self, raw_key: str | None) -> None:
        self.client = Client()
        self.raw_key = raw_key
        self.answers: list[tuple[str, str, Any]] = []

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        raw: bytes | None = None,
        query: dict[str, Any] | None = None,
    ) -> Answer:
        all_headers = dict(headers or {})
        if self.raw_key is not None and "Authorization" not in all_headers:
            all_headers["Authorization"] = f"Bearer {self.raw_key}"
        data: Any = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs: dict[str, Any] = {"headers": all_headers}
        if data is not None:
            kwargs.update(data=data, content_type=content_type)
        elif method in ("POST", "PUT", "PATCH"):
            kwargs.update(data=b"", content_type=content_type)  # as curl -X POST: no body
        if query:
            path = path + "?" + "&".join(f"{k}={v}" for k, v in query.items())
        response = getattr(self.client, method.lower())(path, **kwargs)
        content = b"".join(response.streaming_content) if response.streaming else response.content
        is_json = response.get("Content-Type", "").startswith("application/json")
        body_out = json.loads(content) if is_json and content else None
        return Answer(response.status_code, body_out, response, content)

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return self.call("POST", path, body, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return self.call("PATCH", path, body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return self.call("PUT", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Answer:
        return self.call("DELETE", path, **kwargs)


@pytest.fixture
def api_a(world) -> ApiClient:
    _, raw_key = services.api_key_issue(tenant=world.tenant_a, name="backend a")
    return ApiClient(raw_key)


@pytest.fixture
def api_b(world) -> ApiClient:
    _, raw_key = services.api_key_issue(tenant=world.tenant_b, name="backend b")
    return ApiClient(raw_key)


@pytest.fixture
def agent_a(world):
    return agent_create(
        tenant=world.tenant_a, actor=world.owner_a,
        fields={"name": "Support", "instructions": "Be brief."},
    )  # fmt: skip


@pytest.fixture
def agent_b(world):
    return agent_create(tenant=world.tenant_b, actor=world.owner_b, fields={"name": "Other"})


def error_of(answer: Answer) -> dict[str, Any]:
    """The error object, after checking the shape every failure shares."""
    assert set(answer.body) == {"error"}, answer.body
    error = answer.body["error"]
    assert set(error) == {"type", "code", "message", "param"}, error
    assert error["message"]
    return error
