"""Phone calls through Twilio Media Streams: TwiML, request signatures, and the message adapter.

Plain logic, no Django and no Channels, so that the webhook view, the media socket consumer and
the tests share it.

* ``twiml_*`` build the answers of the voice webhook.
* ``twilio_signature``/``twilio_signature_valid`` check ``X-Twilio-Signature`` (HMAC-SHA1 over the
  URL Twilio called and the POST parameters sorted by name, base64, keyed by the auth token).
* ``TwilioCall`` translates one call's Media Streams messages to Realtime client events and the
  Realtime server events back to Twilio messages, and keeps what barge-in needs: which assistant
  item Twilio is playing and how much of it the caller has heard (from the ``mark`` messages
  Twilio echoes once the audio before them is played).

Audio is G.711 μ-law at 8 kHz both ways (``audio/pcmu``): Twilio's payload goes upstream as is
and the upstream's deltas go to Twilio as is. Audio frames are recognised and rewritten with
string operations, never a full JSON decode (50 frames a second each way per call).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape

from agents.realtime import frames

PHONE_AUDIO_FORMAT = "audio/pcmu"
# μ-law at 8 kHz: one byte per sample, eight samples per millisecond.
PCMU_BYTES_PER_MS = 8
STREAM_PATH = "/twilio/stream/"
TOKEN_PARAMETER = "token"
# The number called (to find its auth token for call control) and the call's prompt variables.
NUMBER_PARAMETER = "number"
CALLER_VARIABLE = "caller_number"
MARK_PREFIX = "vp-"
UNAVAILABLE_MESSAGE = "Sorry, this service is not available right now. Goodbye."
UNKNOWN_NUMBER_MESSAGE = "Sorry, this number is not in service."

_AUDIO_DELTA = "response.output_audio.delta"
_SPEECH_STARTED = "input_audio_buffer.speech_started"

# Twilio puts "event" first in every message it sends.
_EVENT_HEAD = re.compile(r'\{\s*"event"\s*:\s*"([a-z_]{1,32})"')
# Base64 carries no quote or backslash: the character class is exact and linear-time.
_PAYLOAD = re.compile(r'"payload"\s*:\s*"([A-Za-z0-9+/]*={0,2})"')
_TRACK = re.compile(r'"track"\s*:\s*"([a-z_]{1,16})"')
_DELTA = re.compile(r'"delta"\s*:\s*"([A-Za-z0-9+/]*={0,2})"')
_HEAD_TYPE = re.compile(r'"type"\s*:\s*"([a-z_.]{1,64})"')
_HEAD_CHARS = 200
_ITEM_ID = re.compile(r'"item_id"\s*:\s*"([A-Za-z0-9_\-.:]{1,128})"')


# --- TwiML ---------------------------------------------------------------------------------

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def _attribute(value: str) -> str:
    return '"' + escape(value, {'"': "&quot;"}) + '"'


def twiml_connect_stream(*, stream_url: str, parameters: dict[str, str]) -> str:
    """Connect the call's audio to a bidirectional media stream (``<Connect><Stream>``).

    The parameters reach the socket in the ``start`` message's ``customParameters``.
    """
    rendered = "".join(
        f"<Parameter name={_attribute(name)} value={_attribute(value)}/>"
        for name, value in parameters.items()
    )
    return (
        f"{_XML_HEAD}<Response><Connect><Stream url={_attribute(stream_url)}>"
        f"{rendered}</Stream></Connect></Response>"
    )


def twiml_say_hangup(message: str) -> str:
    """Say ``message`` and hang up."""
    return f"{_XML_HEAD}<Response><Say>{escape(message)}</Say><Hangup/></Response>"


def twiml_reject(message: str = UNKNOWN_NUMBER_MESSAGE) -> str:
    """Refuse a call: a short message, then hang up (what a caller of a dead number hears)."""
    return twiml_say_hangup(message)


def stream_url(*, webhook_url: str) -> str:
    """The media socket's URL on the host Twilio called: ``wss://`` for https, ``ws://`` else."""
    parts = urlsplit(webhook_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, STREAM_PATH, "", ""))


# --- request signatures --------------------------------------------------------------------


def twilio_signature(*, auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` of a webhook request.

    The full URL, then every POST parameter sorted by name (values of a repeated name sorted
    too), each as name and value appended; HMAC-SHA1 keyed by the auth token; base64.
    """
    data = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with its default port added or removed.

    Proxies disagree on whether the port stays in the Host header; Twilio signs the URL as it
    was configured, with or without one (its own validator tries both).
    """
    parts = urlsplit(url)
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port is None and default_port is not None:
        other = urlunsplit(parts._replace(netloc=f"{host}:{default_port}"))
    elif parts.port == default_port:
        other = urlunsplit(parts._replace(netloc=host))
    else:
        return [url]
    return [url, other]


def twilio_signature_valid(
    *, auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str
) -> bool:
    """Does ``signature`` sign this request? (constant-time comparison)"""
    if not auth_token or not signature:
        return False
    params = list(params)
    valid = False
    for candidate in _url_variants(url):
        expected = twilio_signature(auth_token=auth_token, url=candidate, params=params)
        # Compare every variant, so the time taken says nothing about which one matched.
        valid |= hmac.compare_digest(expected.encode(), signature.encode())
    return valid


# --- the Media Streams adapter -------------------------------------------------------------


def twilio_event(text: str) -> str | None:
    """The ``event`` of a Twilio message when it comes first (it always does), else None."""
    match = _EVENT_HEAD.match(text)
    return match.group(1) if match else None


def media_append_event(text: str) -> str | None:
    """A Twilio ``media`` message of the caller's audio as a Realtime ``append`` frame.

    The payload is copied as is (μ-law is also the session's input format). None for other
    tracks or a message without a base64 payload.
    """
    track = _TRACK.search(text)
    if track is not None and track.group(1) != "inbound":
        return None
    payload = _PAYLOAD.search(text)
    if payload is None or payload.end(1) == payload.start(1):
        return None
    return '{"type":"input_audio_buffer.append","audio":"' + payload.group(1) + '"}'


def event_type_peek(text: str) -> str | None:
    """The first ``type`` in the head of a Realtime server event, without decoding it.

    OpenAI puts ``type`` first, the local engine puts ``event_id`` first. The two events this
    adapter acts on (audio deltas, speech started) have no nested object, so their first
    ``type`` is theirs; for other events a nested type may be found, which is harmless since
    no other event is acted on. None: no ``type`` near the head (take the slow path).
    """
    match = _HEAD_TYPE.search(text, 0, _HEAD_CHARS)
    return match.group(1) if match else None


def _decoded_bytes(match: re.Match[str]) -> int:
    start, end = match.span(1)
    return frames.base64_decoded_bytes(end - start, match.string, end)


@dataclass
class _PlayedItem:
    """An assistant item's audio as sent to Twilio and as played to the caller."""

    item_id: str
    sent_bytes: int = 0
    played_bytes: int = 0

    @property
    def played_ms(self) -> int:
        return self.played_bytes // PCMU_BYTES_PER_MS


@dataclass
class Outbound:
    """What one upstream event turns into: Twilio messages, then Realtime client events."""

    to_twilio: list[str] = field(default_factory=list)
    to_upstream: list[str] = field(default_factory=list)


_NOTHING = Outbound()


@dataclass(frozen=True)
class StreamStart:
    """The identifying part of Twilio's ``start`` message."""

    stream_sid: str
    call_sid: str
    account_sid: str
    parameters: dict[str, str]

    @property
    def token(self) -> str:
        return self.parameters.get(TOKEN_PARAMETER, "")


def stream_start_parse(message: dict[str, Any]) -> StreamStart | None:
    """The ``start`` message's ids and custom parameters (None if it is not one)."""
    start = message.get("start")
    if message.get("event") != "start" or not isinstance(start, dict):
        return None
    parameters = start.get("customParameters")
    if not isinstance(parameters, dict):
        parameters = {}
    return StreamStart(
        stream_sid=str(message.get("streamSid") or start.get("streamSid") or ""),
        call_sid=str(start.get("callSid") or ""),
        account_sid=str(start.get("accountSid") or ""),
        parameters={str(key): str(value) for key, value in parameters.items()},
    )


class TwilioCall:
    """One call's media stream seen from the platform.

    Each audio delta goes to Twilio as a ``media`` message followed by a ``mark`` naming the
    item and how far into it the delta ends; Twilio echoes the mark once that audio is played,
    so ``played`` always knows how much of the item the caller heard. On barge-in (the upstream
    detects the caller's speech) Twilio's buffer is cleared and the item is truncated upstream
    at the heard point, so the model's memory matches what the caller actually heard.
    """

    def __init__(self, stream_sid: str = "") -> None:
        self.stream_sid = stream_sid
        self._marks: dict[str, tuple[_PlayedItem, int]] = {}
        self._mark_counter = 0
        self._playing: _PlayedItem | None = None
        self._items: list[_PlayedItem] = []  # sent, not yet fully played, in playing order
        # Items cut off by barge-in: their late deltas must not reach the caller.
        self._interrupted: set[str] = set()

    # --- Twilio → platform ---------------------------------------------------------------

    def on_mark(self, name: str) -> None:
        """Twilio played everything up to the mark ``name`` (marks come back in order)."""
        entry = self._marks.pop(name, None)
        if entry is None:
            return  # a mark of audio that was cleared, or not ours
        item, end_bytes = entry
        item.played_bytes = max(item.played_bytes, end_bytes)
        # Marks are played in order: every earlier item has been heard in full.
        while self._items and self._items[0] is not item:
            self._items.pop(0)
        if self._items and item.played_bytes >= item.sent_bytes and item is not self._playing:
            self._items.pop(0)

    # --- upstream → Twilio ---------------------------------------------------------------

    def outbound(self, text: str, *, response_active: bool) -> Outbound:
        """Translate one upstream server event; most events are not for Twilio at all."""
        event_type = event_type_peek(text)
        if event_type == _AUDIO_DELTA:
            return self._audio_delta(text)
        if event_type == _SPEECH_STARTED:
            return self.barge_in(response_active=response_active)
        if event_type is None:  # an unusual key order: the slow path
            event = frames.loads_object(text)
            if event is None:
                return _NOTHING
            if event.get("type") == _AUDIO_DELTA:
                return self._audio_delta_event(event)
            if event.get("type") == _SPEECH_STARTED:
                return self.barge_in(response_active=response_active)
        return _NOTHING

    def _audio_delta(self, text: str) -> Outbound:
        delta = _DELTA.search(text)
        item_id = _ITEM_ID.search(text)
        if delta is None or item_id is None:
            event = frames.loads_object(text)
            return self._audio_delta_event(event) if event is not None else _NOTHING
        return self._send_audio(item_id.group(1), delta.group(1), _decoded_bytes(delta))

    def _audio_delta_event(self, event: dict[str, Any]) -> Outbound:
        delta, item_id = event.get("delta"), event.get("item_id")
        if not isinstance(delta, str) or not isinstance(item_id, str) or not delta:
            return _NOTHING
        if re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", delta) is None:
            return _NOTHING
        padding = len(delta) - len(delta.rstrip("="))
        return self._send_audio(item_id, delta, len(delta) // 4 * 3 - padding)

    def _send_audio(self, item_id: str, payload: str, audio_bytes: int) -> Outbound:
        if not payload or item_id in self._interrupted:
            return _NOTHING
        item = self._playing
        if item is None or item.item_id != item_id:
            item = self._playing = _PlayedItem(item_id)
            self._items.append(item)
        item.sent_bytes += audio_bytes
        self._mark_counter += 1
        name = f"{MARK_PREFIX}{self._mark_counter}"
        self._marks[name] = (item, item.sent_bytes)
        sid = json.dumps(self.stream_sid)
        media = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"' + payload + '"}}'
        mark = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":"' + name + '"}}'
        return Outbound(to_twilio=[media, mark])

    def barge_in(self, *, response_active: bool) -> Outbound:
        """The caller speaks: stop the audio Twilio still holds and make the model forget the
        part of its answer the caller did not hear.

        Nothing is sent when nothing is playing or under way (the caller simply took a turn).
        """
        out = Outbound()
        unheard = next((item for item in self._items if item.played_bytes < item.sent_bytes), None)
        if unheard is not None:
            out.to_twilio.append(frames.dumps({"event": "clear", "streamSid": self.stream_sid}))
            out.to_upstream.append(
                frames.dumps(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": unheard.item_id,
                        "content_index": 0,
                        "audio_end_ms": unheard.played_ms,
                    }
                )
            )
        if response_active:
            out.to_upstream.append(frames.dumps({"type": "response.cancel"}))
        # Twilio echoes the marks of cleared audio at once: they say nothing about what was
        # heard, so forget them. What is left of the cut-off answer is dropped.
        if self._playing is not None:
            self._interrupted.add(self._playing.item_id)
        self._marks.clear()
        self._items.clear()
        self._playing = None
        return out

    @property
    def unplayed(self) -> bool:
        """Is audio sent to Twilio still waiting to be heard?"""
        return any(item.played_bytes < item.sent_bytes for item in self._items)

    def played_ms(self, item_id: str) -> int | None:
        """How much of a sent item the caller heard (None once it is forgotten)."""
        item = next((item for item in self._items if item.item_id == item_id), None)
        return item.played_ms if item is not None else None


# --- call control (Twilio's REST API) ------------------------------------------------------

TRANSFER_TIMEOUT_S = 10.0


def twiml_dial(number: str) -> str:
    """Hand the call to ``number`` (``<Dial>``): the media stream ends, the caller rings on."""
    return f"{_XML_HEAD}<Response><Dial>{escape(number)}</Dial></Response>"


@dataclass(frozen=True)
class TwilioCallControl:
    """One live call's control through Twilio's REST API ("Update a Call" with new TwiML).

    Redirecting the call to ``<Dial>`` ends its ``<Connect><Stream>``: Twilio closes the media
    stream (``stop``) and runs the new TwiML. Authenticated as the account with the number's
    auth token (HTTP basic, account SID and token), as Twilio's own clients do.
    """

    api_url: str
    account_sid: str
    call_sid: str
    auth_token: str
    timeout_s: float = TRANSFER_TIMEOUT_S

    def _update_call(self, twiml: str) -> str | None:
        url = (
            f"{self.api_url.rstrip('/')}/2010-04-01/Accounts/{quote(self.account_sid)}"
            f"/Calls/{quote(self.call_sid)}.json"
        )
        credentials = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        request = urllib.request.Request(
            url,
            data=urlencode({"Twiml": twiml}).encode(),
            headers={
                "Authorization": f"Basic {credentials}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as error:
            return f"the phone service refused the transfer (HTTP {error.code})"
        except (OSError, ValueError) as error:
            return f"the phone service could not be reached ({type(error).__name__})"
        return None

    async def transfer(self, number: str) -> str | None:
        if not (self.account_sid and self.call_sid and self.auth_token):
            return "this call cannot be transferred (no call id)"
        return await asyncio.to_thread(self._update_call, twiml_dial(number))
