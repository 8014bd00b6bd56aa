"""The README's REST API quick start works as written: its curl lines and its typed Python
client run against a real platform process (Daphne, migrated and seeded as ``make run`` does)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import Platform, base_environ

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(after: str, language: str) -> str:
    text = README.read_text()
    start = text.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match, f"no {language} block after {after!r}"
    return match.group(1)


def json_documents(text: str) -> list:
    decoder, documents, position = json.JSONDecoder(), [], 0
    text = text.strip()
    while position < len(text):
        document, end = decoder.raw_decode(text, position)
        documents.append(document)
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return documents


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("api-readme")
    server = Platform(base_environ(tmp_path), tmp_path)
    yield server
    server.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_quick_start(platform, tmp_path):
    script = readme_block("**Quick start with curl**", "sh")
    key, agent_id = platform.seed["api_key"], platform.seed["agent_id"]
    script = re.sub(
        r"^export VP=.*$", f"export VP={platform.http_url} KEY={key}", script, flags=re.M
    )
    script = script.replace("AGENT_ID", str(agent_id)).replace("SESSION_ID", "999999")
    script = script.replace("INVOICE_ID", "999999")
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    (listed, created, updated, made_live, diff, published, sessions, transcript, usage) = (
        json_documents(done.stdout)
    )
    # The platform is shared by this module's tests (the typed client's test may have made one).
    assert agent_id in [agent["id"] for agent in listed["data"]]
    assert (created["name"], created["voice"], created["live_version"]) == ("Support", "cedar", 1)
    assert updated["instructions"] == "Be brief." and updated["unpublished_changes"]
    assert made_live["live_version"] >= 2 and made_live["unpublished_changes"] == []
    assert diff["to_version"] == 2 and diff["changes"]
    assert published["live_version"] == 1
    assert sessions == {"data": [], "has_more": False, "next_cursor": None}
    assert transcript["error"]["code"] == "session_not_found"
    assert usage["group_by"] == "model"
    pdf_answer = json.loads((tmp_path / "invoice.pdf").read_text())  # no invoice yet: the error
    assert pdf_answer["error"]["code"] == "invoice_not_found"


def test_the_typed_python_client(platform, tmp_path):
    code = readme_block("**Typed Python client**", "python")
    code = code.replace("http://127.0.0.1:8000", platform.http_url)
    code = code.replace("vp_live_…", platform.seed["api_key"])
    path = tmp_path / "client.py"
    path.write_text(code)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2 []"
