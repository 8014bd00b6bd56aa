"""Who is speaking and which response is active: the relay's view of the conversation's turn."""

from __future__ import annotations

from typing import Any


class TurnState:
    def __init__(self, *, vad_answers: bool) -> None:
        self.response_active = False
        self.active_response_id = ""
        self.in_speech = False
        # Speech ended and the server will answer it: the turn stays open until it does.
        self.awaiting_answer = False
        self._vad_answers = vad_answers

    def on_session(self, session: Any) -> None:
        """Follow turn detection as the upstream reports it (a client may change it)."""
        if not isinstance(session, dict):
            return
        audio_input = (session.get("audio") or {}).get("input")
        if isinstance(audio_input, dict) and "turn_detection" in audio_input:
            detection = audio_input["turn_detection"]
            self._vad_answers = (
                isinstance(detection, dict) and detection.get("create_response", True) is not False
            )

    def on_response_created(self, response: dict[str, Any]) -> None:
        self.response_active = True
        self.awaiting_answer = False
        self.active_response_id = str(response.get("id") or "")

    def on_response_done(self) -> None:
        self.response_active = False
        self.active_response_id = ""

    def on_speech_started(self) -> None:
        self.in_speech = True

    def on_speech_stopped(self) -> None:
        self.in_speech = False
        self.awaiting_answer = self._vad_answers

    def reset(self) -> None:
        """A new upstream: nobody is speaking there yet."""
        self.in_speech = self.awaiting_answer = False

    @property
    def busy(self) -> bool:
        """Someone is speaking, or an answer is under way or about to start."""
        return self.response_active or self.in_speech or self.awaiting_answer
