"""The plain parts: TwiML, Twilio's signature, and the Media Streams ↔ Realtime adapter."""

from __future__ import annotations

import base64
import json

import pytest

from agents.telephony import (
    TwilioCall,
    media_append_event,
    stream_start_parse,
    stream_url,
    twilio_event,
    twilio_signature,
    twilio_signature_valid,
    twiml_connect_stream,
    twiml_say_hangup,
)

SID = "MZ1"
# Twilio's documented example (twilio-python's RequestValidator tests).
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_signature_matches_twilios_documented_example():
    signature = twilio_signature(auth_token="12345", url=DOC_URL, params=DOC_PARAMS.items())
    assert signature == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature_valid(
        auth_token="12345", url=DOC_URL, params=DOC_PARAMS.items(), signature=signature
    )
    assert not twilio_signature_valid(
        auth_token="54321", url=DOC_URL, params=DOC_PARAMS.items(), signature=signature
    )
    assert not twilio_signature_valid(
        auth_token="12345", url=DOC_URL, params=DOC_PARAMS.items(), signature=""
    )
    assert not twilio_signature_valid(
        auth_token="", url=DOC_URL, params=DOC_PARAMS.items(), signature=signature
    )


def test_signature_with_and_without_the_default_port():
    signature = twilio_signature(auth_token="12345", url=DOC_URL, params=DOC_PARAMS.items())
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert twilio_signature_valid(
        auth_token="12345", url=with_port, params=DOC_PARAMS.items(), signature=signature
    )
    other_port = "https://mycompany.com:8443/myapp.php?foo=1&bar=2"
    assert not twilio_signature_valid(
        auth_token="12345", url=other_port, params=DOC_PARAMS.items(), signature=signature
    )


def test_twiml():
    assert twiml_connect_stream(
        stream_url="wss://voice.example/twilio/stream/", parameters={"token": 'a"<b>&'}
    ) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://voice.example/twilio/stream/">'
        '<Parameter name="token" value="a&quot;&lt;b&gt;&amp;"/></Stream></Connect></Response>'
    )
    assert twiml_say_hangup("Bye & <thanks>") == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        "<Response><Say>Bye &amp; &lt;thanks&gt;</Say><Hangup/></Response>"
    )
    assert stream_url(webhook_url="https://v.example/twilio/voice?x=1") == (
        "wss://v.example/twilio/stream/"
    )
    assert stream_url(webhook_url="http://127.0.0.1:8000/twilio/voice") == (
        "ws://127.0.0.1:8000/twilio/stream/"
    )


def test_media_becomes_an_append_without_decoding():
    message = (
        '{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2",'
        '"timestamp":"20","payload":"/39/fw=="},"streamSid":"MZ1"}'
    )
    assert twilio_event(message) == "media"
    assert media_append_event(message) == (
        '{"type":"input_audio_buffer.append","audio":"/39/fw=="}'
    )
    assert media_append_event(message.replace("inbound", "outbound")) is None
    assert media_append_event(message.replace("/39/fw==", "")) is None
    # Anything but plain base64 (here an escaped quote) is not relayed.
    assert media_append_event(message.replace("/39/fw==", 'ab\\"x')) is None
    assert twilio_event('{"sequenceNumber":"1","event":"media"}') is None


def test_start_parse():
    start = stream_start_parse(
        {
            "event": "start",
            "streamSid": "MZ9",
            "start": {"callSid": "CA9", "accountSid": "AC9", "customParameters": {"token": "t"}},
        }
    )
    assert (start.stream_sid, start.call_sid, start.account_sid, start.token) == (
        "MZ9", "CA9", "AC9", "t",
    )  # fmt: skip
    assert stream_start_parse({"event": "start"}) is None
    assert stream_start_parse({"event": "start", "start": {}}).token == ""


def delta(item_id: str, audio: bytes, *, event_id_first: bool = True) -> str:
    event = {
        "type": "response.output_audio.delta",
        "response_id": "resp_1",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(audio).decode(),
    }
    if event_id_first:
        event = {"event_id": "event_1", **event}
    return json.dumps(event, separators=(",", ":"))


SPEECH_STARTED = json.dumps(
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 900, "item_id": "item_u2"}
)


def test_audio_deltas_become_media_and_a_mark():
    call = TwilioCall(SID)
    out = call.outbound(delta("item_a", b"\xff" * 800), response_active=True)
    assert [json.loads(message) for message in out.to_twilio] == [
        {"event": "media", "streamSid": SID,
         "media": {"payload": base64.b64encode(b"\xff" * 800).decode()}},
        {"event": "mark", "streamSid": SID, "mark": {"name": "vp-1"}},
    ]  # fmt: skip
    assert out.to_upstream == []
    # Same in OpenAI's key order and pretty-printed.
    pretty = json.dumps(json.loads(delta("item_a", b"\x7f" * 8, event_id_first=False)), indent=1)
    assert len(call.outbound(pretty, response_active=True).to_twilio) == 2


@pytest.mark.parametrize(
    "event",
    [
        {"type": "session.created", "session": {"id": "s"}},
        {"type": "response.output_audio_transcript.delta", "delta": "hello"},
        {"type": "error", "error": {"code": "x", "message": "response.output_audio.delta"}},
        {"type": "response.done", "response": {"id": "r"}},
    ],
)
def test_other_events_do_not_reach_twilio(event):
    out = TwilioCall(SID).outbound(json.dumps(event), response_active=False)
    assert (out.to_twilio, out.to_upstream) == ([], [])


def test_barge_in_truncates_at_the_last_echoed_mark_and_cancels_an_active_response():
    call = TwilioCall(SID)
    marks = []
    for _ in range(5):
        out = call.outbound(delta("item_a", b"\xff" * 800), response_active=True)
        marks.append(json.loads(out.to_twilio[1])["mark"]["name"])
    call.on_mark(marks[0])
    call.on_mark(marks[1])
    assert call.played_ms("item_a") == 200
    out = call.outbound(SPEECH_STARTED, response_active=True)
    assert [json.loads(message) for message in out.to_twilio] == [
        {"event": "clear", "streamSid": SID}
    ]
    assert [json.loads(message) for message in out.to_upstream] == [
        {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
         "audio_end_ms": 200},
        {"type": "response.cancel"},
    ]  # fmt: skip
    # Twilio echoes the cleared marks; late deltas of the cut-off item are dropped.
    for name in marks[2:]:
        call.on_mark(name)
    assert call.outbound(delta("item_a", b"\xff" * 800), response_active=True).to_twilio == []
    assert not call.unplayed
    # The next answer plays and is tracked afresh.
    out = call.outbound(delta("item_b", b"\xff" * 80), response_active=True)
    assert json.loads(out.to_twilio[1])["mark"]["name"] == "vp-6"
    assert call.unplayed


def test_no_barge_in_when_nothing_is_playing():
    call = TwilioCall(SID)
    assert call.outbound(SPEECH_STARTED, response_active=False).to_twilio == []
    out = call.outbound(delta("item_a", b"\xff" * 160), response_active=True)
    call.on_mark(json.loads(out.to_twilio[1])["mark"]["name"])
    # Heard in full: the caller simply takes the next turn.
    out = call.outbound(SPEECH_STARTED, response_active=False)
    assert (out.to_twilio, out.to_upstream) == ([], [])
    # A response under way without audio yet is still cancelled.
    out = call.outbound(SPEECH_STARTED, response_active=True)
    assert out.to_twilio == []
    assert out.to_upstream == ['{"type":"response.cancel"}']


def test_an_earlier_item_is_heard_once_a_later_mark_comes_back():
    call = TwilioCall(SID)
    call.outbound(delta("item_a", b"\xff" * 80), response_active=True)
    out = call.outbound(delta("item_b", b"\xff" * 160), response_active=True)
    call.outbound(delta("item_b", b"\xff" * 160), response_active=True)
    call.on_mark(json.loads(out.to_twilio[1])["mark"]["name"])
    assert call.played_ms("item_a") is None  # heard in full, forgotten
    assert call.played_ms("item_b") == 20
    truncate = json.loads(call.barge_in(response_active=False).to_upstream[0])
    assert (truncate["item_id"], truncate["audio_end_ms"]) == ("item_b", 20)
    call.on_mark("vp-999")  # unknown marks are ignored
