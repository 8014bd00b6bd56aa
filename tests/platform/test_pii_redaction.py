"""The data policy end to end: a real Daphne process (local engine, Redis channel layer) talks
with a caller who says personal data from the labelled set; the test reads every sink: the
database rows (transcript items, the summary, segment seeds) and the console live view's
messages on the channel layer."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from channels_redis.core import RedisChannelLayer

from agents import pii
from agents.pii_evaluation import corpus_load
from agents.services import session_live_group
from tests.conftest import require_service
from tests.run_isolation import REDIS_PREFIX, redis_url
from tests.servers import Platform, api_connect, base_environ
from tests.waiting import until_sync

LIVE_KEY = "test-live-view-key-for-pii-redaction"


def utterances() -> list[tuple[str, list[str]]]:
    """One written and one spoken utterance per type, and one of each form with two entities:
    (text, the entities' values)."""
    chosen, seen = [], set()
    for example in corpus_load():
        if not example.entities:
            continue
        several = len(example.entities) > 1
        key = (example.form, "several" if several else example.entities[0].type)
        if key not in seen:
            seen.add(key)
            chosen.append((example.text, [e.text_in(example.text) for e in example.entities]))
    return chosen


UTTERANCES = utterances()


def pii_strings(values: list[str]) -> set[str]:
    """Each value as said, and its digits or characters run together (as a reformatter would)."""
    strings = set(values)
    for value in values:
        compact = re.sub(r"[\s().+-]", "", value)
        if len(compact) >= 8 and any(ch.isdigit() for ch in compact):
            strings.add(compact)
    return strings


@pytest.fixture
def platform(tmp_path):
    require_service("Redis", "127.0.0.1", 6379)
    environ = base_environ(
        tmp_path, REDIS_URL=redis_url(), VP_REDIS_PREFIX=REDIS_PREFIX,
        VP_CHANNEL_LAYER_KEYS=LIVE_KEY, VP_SESSION_ROTATE_SECONDS="1",
        # The local engine answers as fast as it speaks, not in real time: a dozen turns.
        VP_LOCAL_ENGINE_REALTIME_PACING="false",
    )  # fmt: skip
    platform = Platform(environ, tmp_path)
    yield platform
    platform.stop()


def set_policy(platform: Platform, policy: str) -> None:
    platform.shell(
        "from tenants.models import Tenant\n"
        f"Tenant.objects.filter(slug='demo').update(data_policy={policy!r})"
    )


def stored(platform: Platform) -> dict:
    code = (
        "import json\n"
        "from tenants.scoping import scopes_disabled\n"
        "from agents.models import Session, SessionSegment, SessionSummary, TranscriptItem\n"
        "with scopes_disabled():\n"
        "    print(json.dumps({\n"
        "        'ended': list(Session.objects.values_list('end_reason', flat=True)),\n"
        "        'items': list(TranscriptItem.objects.order_by('sequence')"
        ".values('role', 'kind', 'text', 'data')),\n"
        "        'summaries': list(SessionSummary.objects.values('text', 'prompt', 'output')),\n"
        "        'seeds': list(SessionSegment.objects.order_by('index')"
        ".values_list('reason', 'seed_summary')),\n"
        "    }))"
    )
    return json.loads(platform.shell(code).splitlines()[-1])


async def converse(platform: Platform) -> list[dict]:
    """Say every utterance (one turn each), hang up; the live view's messages until the end."""
    layer = RedisChannelLayer(
        hosts=[{"address": redis_url(), "socket_timeout": 15.0}],
        prefix=f"{REDIS_PREFIX}:channels:",
        symmetric_encryption_keys=[LIVE_KEY],
    )  # fmt: skip
    channel = await layer.new_channel()
    live: list[dict] = []
    async with api_connect(platform.ws_url, platform.seed["api_key"]) as connection:
        assert json.loads(await connection.recv())["type"] == "session.created"
        session_id = await asyncio.to_thread(platform.open_session_id)
        await layer.group_add(session_live_group(session_id), channel)
        # Read as they come: the layer drops what waits longer than its expiry.
        collecting = asyncio.create_task(collect(layer, channel, live))
        for text, _ in UTTERANCES:
            item = {"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": text}]}  # fmt: skip
            await connection.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await connection.send(json.dumps({"type": "response.create"}))
            while True:
                event = json.loads(await asyncio.wait_for(connection.recv(), 30))
                assert event["type"] != "error", event
                if event["type"] == "response.done":
                    break
    await asyncio.wait_for(collecting, 60)
    await layer.flush()
    return live


async def collect(layer: RedisChannelLayer, channel: str, live: list[dict]) -> None:
    while not live or live[-1]["type"] != "live.ended":
        live.append(await layer.receive(channel))


def everything(stored_rows: dict, live: list[dict]) -> str:
    return json.dumps({"stored": stored_rows, "live": live}, ensure_ascii=False)


def session_over(platform: Platform) -> dict:
    rows: dict = {}

    def ended() -> bool:
        rows.update(stored(platform))
        return bool(rows["ended"]) and all(rows["ended"])

    until_sync(ended, "the session's end stored", timeout=60)
    return rows


@pytest.mark.django_db(transaction=True)  # for the settings the channel layer's import reads
async def test_under_redact_no_personal_data_reaches_the_database_or_the_live_view(platform):
    await asyncio.to_thread(set_policy, platform, "redact")
    live = await converse(platform)
    rows = await asyncio.to_thread(session_over, platform)
    said = everything(rows, live)
    for _, values in UTTERANCES:
        for value in pii_strings(values):
            assert value not in said, value
    # Not vacuous: every utterance was stored and shown, with its entities' types in place.
    user_items = [i["text"] for i in rows["items"] if i["role"] == "user"]
    assert user_items == [pii.redact(text) for text, _ in UTTERANCES]
    shown = [m["item"]["text"] for m in live if m["type"] == "live.transcript"]
    assert [t for t in shown if t in user_items] == user_items
    for kind in pii.TYPES:
        assert f"[{kind}]" in said
    # The session rotated; a later segment starts from the summary made so far, which a busy
    # machine may not have made yet (then the seed is empty): any seed there is has the types.
    assert len(rows["seeds"]) >= 2
    assert all("[" in seed for _, seed in rows["seeds"] if seed)
    # A summary made before the first turn finished (a busy machine) is empty; any with text
    # has the types in place.
    assert rows["summaries"]
    assert all("[" in summary["text"] for summary in rows["summaries"] if summary["text"])


@pytest.mark.django_db(transaction=True)
async def test_under_metadata_only_nothing_said_is_kept_or_shown(platform):
    await asyncio.to_thread(set_policy, platform, "metadata")
    live = await converse(platform)
    rows = await asyncio.to_thread(session_over, platform)
    said = everything(rows, live)
    for _, values in UTTERANCES:
        for value in pii_strings(values):
            assert value not in said, value
    messages = [i for i in rows["items"] if i["kind"] == "message"]
    assert len([i for i in messages if i["role"] == "user"]) == len(UTTERANCES)
    assert all(item["text"] == "" for item in messages)
    assert [s for s in rows["summaries"] if any(s.values())] == []
    assert len(rows["seeds"]) >= 2 and all(seed == "" for _, seed in rows["seeds"])
    transcripts = [m["item"] for m in live if m["type"] == "live.transcript"]
    assert len(transcripts) >= len(UTTERANCES)
    assert all(item["text"] == "" for item in transcripts if item["kind"] == "message")


@pytest.mark.django_db(transaction=True)
async def test_under_keep_everything_is_stored_and_shown_as_said(platform):
    live = await converse(platform)
    rows = await asyncio.to_thread(session_over, platform)
    user_items = [i["text"] for i in rows["items"] if i["role"] == "user"]
    assert user_items == [text for text, _ in UTTERANCES]
    shown = [m["item"]["text"] for m in live if m["type"] == "live.transcript"]
    assert [t for t in shown if t in user_items] == user_items
