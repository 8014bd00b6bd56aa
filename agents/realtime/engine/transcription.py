"""Input transcription: the events that report what was heard in a user's audio turn."""

from __future__ import annotations

from typing import Any

from ..protocol import text_tokens, user_audio_tokens

# Billed by audio duration rather than tokens, as at OpenAI.
DURATION_MODELS = ("whisper-1", "gpt-realtime-whisper")


def transcription_events(
    item_id: str, transcript: str, ms: float, transcription: dict[str, Any]
) -> list[dict[str, Any]]:
    """One ``...input_audio_transcription.delta`` per word, then ``.completed`` with usage."""
    events: list[dict[str, Any]] = [
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": item_id,
            "content_index": 0,
            "delta": word if i == 0 else " " + word,
        }
        for i, word in enumerate(transcript.split())
    ]
    if (transcription.get("model") or "") in DURATION_MODELS:
        usage: dict[str, Any] = {"type": "duration", "seconds": round(ms / 1000, 3)}
    else:
        audio_in = user_audio_tokens(ms)
        out = text_tokens(transcript)
        usage = {
            "type": "tokens",
            "input_tokens": audio_in,
            "output_tokens": out,
            "total_tokens": audio_in + out,
            "input_token_details": {"audio_tokens": audio_in, "text_tokens": 0},
        }
    events.append(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": 0,
            "transcript": transcript,
            "usage": usage,
        }
    )
    return events
