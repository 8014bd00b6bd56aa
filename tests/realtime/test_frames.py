"""The relay's cheap looks at audio frames agree with their definition: an append frame is
recognised exactly when the anchored regular expression below (the fast path's original form)
matches, and measured the same; anything else takes the slow path."""

from __future__ import annotations

import base64
import json
import re

from hypothesis import given
from hypothesis import strategies as st

from agents.realtime import frames

REFERENCE = re.compile(
    r'\{\s*"type"\s*:\s*"((?:session\.)?input_audio_buffer\.append)"\s*,'
    r'(?:\s*"event_id"\s*:\s*"[A-Za-z0-9_\-.:]{0,64}"\s*,)?'
    r'\s*"audio"\s*:\s*"([A-Za-z0-9+/]*={0,2})"\s*'
    r'(?:,\s*"event_id"\s*:\s*"[A-Za-z0-9_\-.:]{0,64}"\s*)?\}\s*'
)


def reference(text: str) -> tuple[str, int] | None:
    match = REFERENCE.fullmatch(text)
    if match is None:
        return None
    run = match.group(2)
    padding = len(run) - len(run.rstrip("="))
    return match.group(1), max(0, len(run) // 4 * 3 - padding)


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Pieces of append frames and of what gets close to one.
PIECES = st.sampled_from(
    ['{"type":"input_audio_buffer.append",', '{"type": "session.input_audio_buffer.append", ',
     '"event_id":"e_1",', ' "event_id": "ev-2:x" ', '"audio":"', '"audio": "', '"', "}", " ",
     ",", "=", "==", "===", "AAAA", "+/9z", "\\u0041", "\\", "é", "\u00a0", "\n", '"x":1',
     "input_audio_buffer.append", "{", ":"]
)  # fmt: skip


@given(st.lists(st.one_of(PIECES, st.text(alphabet=B64 + '"=\\ {},:é', max_size=12)), max_size=12))
def test_recognised_exactly_as_the_definition_says(pieces):
    text = "".join(pieces)
    assert frames.append_audio(text) == reference(text)


HEADS = st.sampled_from(
    ['{"type":"input_audio_buffer.append","audio":"',
     '{ "type" : "session.input_audio_buffer.append" , "event_id" : "a.b" , "audio" : "',
     '{"type":"input_audio_buffer.append","audio": "',
     '{"type":"input_audio_buffer.appendx","audio":"',
     '{"type":"input_audio_buffer.append","audio":'],
)  # fmt: skip
TAILS = st.sampled_from(['"}', '" }\n', '","event_id":"e1"}', '" , "event_id" : "" } ', '"', '"}x',
                         '",}', '"}}', ""])  # fmt: skip


@given(HEADS, st.text(alphabet=B64[:3] + '+/="\\é \u00a0', max_size=10), TAILS)
def test_a_frame_shaped_like_an_append_is_judged_as_the_definition_says(head, run, tail):
    text = head + run + tail
    assert frames.append_audio(text) == reference(text)


@given(
    audio=st.binary(max_size=3000),
    event_id=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_\-.:]{0,64}", fullmatch=True)),
    first=st.booleans(),
    kind=st.sampled_from(["input_audio_buffer.append", "session.input_audio_buffer.append"]),
    spaced=st.booleans(),
)
def test_every_canonical_append_is_recognised_and_measured(audio, event_id, first, kind, spaced):
    event = {"type": kind}
    encoded = base64.b64encode(audio).decode()
    if event_id is not None and first:
        event["event_id"] = event_id
    event["audio"] = encoded
    if event_id is not None and not first:
        event["event_id"] = event_id
    text = json.dumps(event) if spaced else json.dumps(event, separators=(",", ":"))
    assert frames.append_audio(text) == (kind, len(audio)) == reference(text)


def test_what_is_not_an_append_frame_takes_the_slow_path():
    ok = '{"type":"input_audio_buffer.append","audio":"AAAA"}'
    assert frames.append_audio(ok) == ("input_audio_buffer.append", 3)
    for text in (
        '{"type":"input_audio_buffer.append","audio":"AA\\u0041A"}',  # an escape
        '{"type":"input_audio_buffer.append","audio":"AAAA","x":1}',  # another field
        '{"type":"input_audio_buffer.append","audio":"AAAA===="}',  # padding beyond two
        '{"type":"input_audio_buffer.append","audio":"AAAA==="}',
        '{"type":"input_audio_buffer.append","audio":"AAé="}',  # not base64
        '{"type":"input_audio_buffer.append","audio":"AAAA"',  # unterminated
        '{"type":"input_audio_buffer.append","audio":"AAAA"}{}',  # two objects
    ):
        assert frames.append_audio(text) is None, text
    # A lone "=" is no audio (it used to count as minus one byte).
    assert frames.append_audio('{"type":"input_audio_buffer.append","audio":"="}') == (
        "input_audio_buffer.append",
        0,
    )
