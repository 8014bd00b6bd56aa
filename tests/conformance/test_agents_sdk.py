"""The OpenAI Agents SDK (``RealtimeRunner``) against the platform under a real server process
(production's: voiceplatform.serve).

``RealtimeRunner(agent).run(model_config={"url": "ws://HOST/v1/realtime?model=…", "api_key":
<platform key>})``, as a tenant backend writes it. The SDK runs in its own process from its own
install directory (see ``agents_sdk_client.py`` for why); every raw server event it received
comes back here and is validated against ``openai.types.realtime``'s server event union.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests.conformance.protocol import ITEM_EVENTS, types, validate
from tests.conftest import IN_CI

pytestmark = [pytest.mark.timeout(120)]

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "agents-sdk-requirements.txt"
CLIENT = HERE / "agents_sdk_client.py"
MODEL = "gpt-realtime-2"


@pytest.fixture(scope="session")
def agents_sdk_site() -> Path:
    """A directory holding the Agents SDK and its dependencies, installed once per
    requirements file (next to the venv, outside the repository's tracked files)."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    target = Path(sys.prefix) / f"conformance-agents-sdk-{digest}"
    if (target / ".complete").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--target", str(partial), "-r", str(REQUIREMENTS),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        message = f"could not install the Agents SDK: {result.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (target / ".complete").touch()
    return target


def run_client(site: Path, tmp_path: Path, **spec: Any) -> dict[str, Any]:
    """Run one Agents SDK session; every raw server event it received, validated."""
    environ = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")
    }
    environ["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-P", str(CLIENT), json.dumps(spec)],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.splitlines()[-1])
    for event in outcome["raw"]:
        validate(json.dumps(event))
    return outcome


def url(conf) -> str:
    return f"{conf.platform.ws_url}/v1/realtime?model={MODEL}"


def answers(events: list[dict[str, Any]]) -> list[str]:
    return [
        e.get("transcript", e.get("text"))
        for e in events
        if e["type"] in ("response.output_audio_transcript.done", "response.output_text.done")
    ]


def assert_clean(outcome: dict[str, Any]) -> None:
    """No exception, no error the SDK surfaced, no ``error`` event, the barrier reached."""
    errors = [e for e in outcome["raw"] if e["type"] == "error"]
    assert outcome["exceptions"] == [], (outcome["exceptions"], errors, types(outcome["raw"]))
    assert errors == []
    assert outcome["session_errors"] == []
    assert outcome["barrier"] >= 0


def test_text_turn(served, agents_sdk_site, tmp_path):
    outcome = run_client(
        agents_sdk_site, tmp_path, scenario="text", url=url(served),
        api_key=served.keys["voice"], text="hello agents sdk",
    )  # fmt: skip
    assert_clean(outcome)
    events = outcome["raw"]
    assert events[0]["type"] == "session.created"
    assert answers(events) == ["You said: hello agents sdk."]
    done = [e for e in events if e["type"] == "response.done"]
    assert [d["response"]["status"] for d in done] == ["completed"]


def test_audio_turn(served, agents_sdk_site, tmp_path, utterance_pcm):
    audio_path = tmp_path / "turn.pcm"
    audio_path.write_bytes(utterance_pcm)
    outcome = run_client(
        agents_sdk_site, tmp_path, scenario="audio", url=url(served),
        api_key=served.keys["voice"], audio_path=str(audio_path),
    )  # fmt: skip
    assert_clean(outcome)
    events = outcome["raw"]
    kinds = types(events)
    assert "input_audio_buffer.speech_started" in kinds
    assert "input_audio_buffer.committed" in kinds
    heard = [
        e["transcript"]
        for e in events
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    assert len(heard) == 1 and "order" in heard[0]
    (answer,) = answers(events)
    assert answer.startswith("You said: ") and "order" in answer


def test_client_tool_round_trip(served, agents_sdk_site, tmp_path):
    """The SDK runs ``lookup_order`` itself, sends the ``function_call_output`` and its own
    ``response.create``: the tool runs once, no ``error``, the output item comes back once,
    and exactly two responses run (the call, the answer)."""
    outcome = run_client(
        agents_sdk_site, tmp_path, scenario="tool", url=url(served),
        api_key=served.keys["tools"], text="please lookup order one two three",
    )  # fmt: skip
    assert_clean(outcome)
    events = outcome["raw"]
    assert outcome["tool_runs"] == [{"order_number": "123"}]
    calls = [
        e["item"]
        for e in events
        if e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"
    ]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("lookup_order", {"order_number": "123"})
    ]
    outputs = {
        e["item"]["id"]
        for e in events
        if e["type"] in ITEM_EVENTS and e["item"]["type"] == "function_call_output"
    }
    assert len(outputs) == 1
    assert answers(events) == ["The lookup order tool returned: status shipped, eta Friday."]
    assert types(events).count("response.created") == 2
    assert "response.created" not in types(events[outcome["barrier"] :])


def test_client_secret_as_the_api_key(served, agents_sdk_site, tmp_path):
    """A backend mints a client secret; the Agents SDK uses it as its ``api_key``."""
    secret = OpenAI(
        api_key=served.keys["voice"], base_url=served.http_base
    ).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 600},
        session={"type": "realtime", "model": MODEL},
    )
    outcome = run_client(
        agents_sdk_site, tmp_path, scenario="text", url=url(served),
        api_key=secret.value, text="hello with a secret",
    )  # fmt: skip
    assert_clean(outcome)
    assert answers(outcome["raw"]) == ["You said: hello with a secret."]
