"""The local engine's parts, without a socket or an event loop: each takes an event (or audio)
and returns what to send."""

from __future__ import annotations

import pytest

from agents.realtime import audio, speech
from agents.realtime.engine.config import realtime_update, translation_update
from agents.realtime.engine.conversation import Conversation
from agents.realtime.engine.input_audio import InputAudio, SpeechStarted, SpeechStopped
from agents.realtime.engine.responses import InputCache, RateLimits, ResponseStream, new_response
from agents.realtime.engine.speaking import speech_chunks
from agents.realtime.protocol import (
    ProtocolError,
    Tokens,
    default_realtime_session,
    default_translation_session,
)
from tests.spoken import spoken


def message(item_id: str, text: str = "hi") -> dict:
    content = [{"type": "input_text", "text": text}]
    return {"id": item_id, "type": "message", "role": "user", "content": content}


def test_conversation_previous_item_ids_are_null_or_real():
    conversation = Conversation()
    assert conversation.add(message("a"), Tokens(text=1))["previous_item_id"] is None
    assert conversation.add(message("b"), Tokens(), after="root")["previous_item_id"] is None
    assert conversation.add(message("c"), Tokens(), after="b")["previous_item_id"] == "b"
    assert [i["id"] for i in conversation.items] == ["b", "c", "a"]
    assert conversation.done_event(conversation.get("a"))["previous_item_id"] == "c"
    assert conversation.delete("c") == {"type": "conversation.item.deleted", "item_id": "c"}
    assert conversation.done_event(conversation.get("a"))["previous_item_id"] == "b"
    with pytest.raises(ProtocolError) as error:
        conversation.delete("c")
    assert error.value.code == "item_not_found"


def test_truncate_counts_only_the_audio_played():
    conversation = Conversation()
    item = {
        "id": "out",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "hello there"}],
    }
    conversation.add(item, Tokens())
    conversation.finish(item, Tokens(text=3, audio=40), audio_ms=2000)
    with pytest.raises(ProtocolError) as error:
        conversation.truncate("out", 0, 2600)
    assert error.value.param == "audio_end_ms"
    event = conversation.truncate("out", 0, 300)
    assert event == {
        "type": "conversation.item.truncated",
        "item_id": "out",
        "content_index": 0,
        "audio_end_ms": 300,
    }
    assert conversation.tokens["out"] == Tokens(audio=6)
    assert item["content"][0]["transcript"] == ""


def test_input_audio_finds_one_turn_with_its_audio():
    pcm = spoken("hello there")
    detector = speech.VoiceActivityDetector(input_rate=24000)
    input_audio = InputAudio(24000, detector)
    found = []
    turn = audio.silence(500) + pcm + audio.silence(1000)
    for i in range(0, len(turn), 960):
        found += input_audio.append(turn[i : i + 960])
    assert [type(f) for f in found] == [SpeechStarted, SpeechStopped]
    started, stopped = found
    assert 140 <= started.ms <= 300
    assert input_audio.ms(stopped.pcm) == pytest.approx(stopped.ms - started.ms, abs=1)
    # What follows the turn stays in the buffer (the next turn's prefix padding comes from it).
    left_ms = input_audio.ms(turn) - stopped.ms
    assert input_audio.ms(input_audio.commit()) == pytest.approx(left_ms, abs=1)
    with pytest.raises(ProtocolError) as error:
        input_audio.commit()
    assert error.value.code == "input_audio_buffer_commit_empty"


def test_speech_chunks_put_each_word_with_or_before_its_audio():
    encoded = bytes(4800 * 10 + 100)  # 1 s and a bit at 24 kHz PCM16
    chunks = speech_chunks("one two three", encoded, rate=24000, sample_width=2, chunk_ms=100)
    assert len(chunks) == 11
    assert chunks[0].text == "one"  # the first delta carries the first word
    assert "".join(c.text for c in chunks) == "one two three"
    assert [len(c.audio) for c in chunks[:-1]] == [4800] * 10
    assert chunks[-1].end_ms == pytest.approx(len(encoded) / 48)


def test_rate_limits_slide_over_a_minute():
    now = [100.0]
    limits = RateLimits(clock=lambda: now[0])
    first = limits.updated_event(1000)
    assert first == {
        "type": "rate_limits.updated",
        "rate_limits": [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 60.0},
            {"name": "tokens", "limit": 400000, "remaining": 399000, "reset_seconds": 60.0},
        ],
    }
    now[0] = 130.0
    second = limits.updated_event(500)["rate_limits"]
    assert [(r["remaining"], r["reset_seconds"]) for r in second] == [(4998, 30.0), (398500, 30.0)]
    now[0] = 161.0  # the first response has left the window
    third = limits.updated_event(0)["rate_limits"]
    assert [(r["remaining"], r["reset_seconds"]) for r in third] == [(4998, 29.0), (399500, 29.0)]


def test_response_stream_stops_at_max_output_tokens():
    config = default_realtime_session("sess_1", "gpt-realtime-2", 0)
    conversation = Conversation()
    conversation.add(message("a", "count to ten"), Tokens(text=3))
    resp = new_response(config, {"max_output_tokens": 3}, conversation, InputCache())
    assert (resp.input_tokens, resp.cached_tokens) == (Tokens(text=10), Tokens())
    stream = ResponseStream(resp, conversation)
    msg, events = stream.message_start(audio=False)
    assert [e["type"] for e in events] == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert events[1]["previous_item_id"] == "a"
    assert stream.text_delta(msg, "You")[0]["delta"] == "You"
    assert stream.text_delta(msg, " said:")[0]["delta"] == " said:"
    assert stream.text_delta(msg, " count") == []  # 15 characters = 4 tokens > 3
    done = stream.text_done(msg, "incomplete")
    assert done[0] == {**done[0], "type": "response.output_text.done", "text": "You said:"}
    assert done[-1]["item"]["status"] == "incomplete"
    assert resp.output_tokens == Tokens(text=3)


def test_transcription_and_translation_session_updates():
    config = {
        "type": "transcription",
        "id": "sess_1",
        "expires_at": 0,
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
    }
    update = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {
                        "model": "gpt-4o-transcribe",
                        "language": "en",
                        "prompt": "x",
                    },
                    "turn_detection": None,
                    "noise_reduction": {"type": "near_field"},
                }
            },
        },
    }
    new = realtime_update(config, update, model="gpt-realtime-2", assistant_audio_sent=False)
    assert new["audio"]["input"] == update["session"]["audio"]["input"]

    translation = default_translation_session("sess_2", "gpt-realtime-translate", 0)
    translation["audio"]["input"]["noise_reduction"] = {"type": "far_field", "strength": 0.5}
    changed = translation_update(
        translation,
        {
            "type": "session.update",
            "session": {
                "audio": {
                    "output": {"language": "fr"},
                    "input": {"noise_reduction": {"type": "near_field"}},
                }
            },
        },
    )
    assert changed["audio"] == {
        "input": {
            "transcription": None,
            "noise_reduction": {"type": "near_field", "strength": 0.5},
        },
        "output": {"language": "fr"},
    }
    assert translation["audio"]["output"] == {"language": "en"}  # the old config is unchanged
    with pytest.raises(ProtocolError) as error:
        translation_update(
            translation, {"type": "session.update", "session": {"instructions": "x"}}
        )
    assert (error.value.code, error.value.param) == ("unknown_parameter", "session.instructions")


def test_switching_session_type_keeps_the_model():
    def update(config: dict, kind: str) -> dict:
        event = {"type": "session.update", "session": {"type": kind}}
        return realtime_update(config, event, model="gpt-realtime-2", assistant_audio_sent=False)

    transcription = update(default_realtime_session("sess_1", "gpt-realtime-2", 0), "transcription")
    assert (transcription["type"], transcription["object"]) == (
        "transcription",
        "realtime.transcription_session",
    )
    realtime = update(transcription, "realtime")
    assert (realtime["type"], realtime["model"], realtime["id"]) == (
        "realtime",
        "gpt-realtime-2",
        "sess_1",
    )
