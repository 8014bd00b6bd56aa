"""What the platform offers an agent: models per kind, voices, efforts, formats, languages.

Pure data, no Django: the console, the validators and the bridge all read it from here.
"""

from __future__ import annotations

VOICE_AGENT = "voice_agent"
TRANSCRIPTION = "transcription"
TRANSLATION = "translation"
KINDS = (
    (VOICE_AGENT, "Voice agent"),
    (TRANSCRIPTION, "Transcription"),
    (TRANSLATION, "Translation"),
)

MODELS_BY_KIND: dict[str, tuple[str, ...]] = {
    VOICE_AGENT: ("gpt-realtime-2", "gpt-realtime-mini", "gpt-realtime"),
    TRANSCRIPTION: ("gpt-realtime-whisper",),
    TRANSLATION: ("gpt-realtime-translate",),
}
ALL_MODELS = tuple(model for models in MODELS_BY_KIND.values() for model in models)
# Text models for post-call analysis (Responses API), each with a price book row (billing 0004).
ANALYSIS_MODELS = ("gpt-5-mini", "gpt-5-nano", "gpt-5.4-mini", "gpt-5.4-nano")
DEFAULT_ANALYSIS_MODEL = "gpt-5-mini"

VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip

REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
DEFAULT_REASONING_EFFORT = "low"

TURN_DETECTION_SERVER_VAD = "server_vad"
TURN_DETECTION_SEMANTIC_VAD = "semantic_vad"
TURN_DETECTION_NONE = "none"
TURN_DETECTIONS = (
    (TURN_DETECTION_SERVER_VAD, "Server VAD (silence detection)"),
    (TURN_DETECTION_SEMANTIC_VAD, "Semantic VAD (end-of-thought detection)"),
    (TURN_DETECTION_NONE, "Off (push to talk: the client commits)"),
)
VAD_EAGERNESS = ("low", "medium", "high", "auto")

# Wire names from the GA protocol (``audio.input.format.type``).
AUDIO_FORMATS = (
    ("audio/pcm", "PCM16, 24 kHz"),
    ("audio/pcmu", "G.711 μ-law, 8 kHz"),
    ("audio/pcma", "G.711 A-law, 8 kHz"),
)

# gpt-realtime-translate's 13 output languages. The seeds disagree on the list; this one follows
# the longest guide (Dutch and Polish rather than Russian and Indonesian), see README.
TRANSLATION_LANGUAGES = (
    ("en", "English"),
    ("es", "Spanish"),
    ("fr", "French"),
    ("de", "German"),
    ("pt", "Portuguese"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("zh", "Chinese (Simplified)"),
    ("ar", "Arabic"),
    ("hi", "Hindi"),
    ("it", "Italian"),
    ("nl", "Dutch"),
    ("pl", "Polish"),
)

PROVIDER_OPENAI = "openai"
PROVIDER_LOCAL = "local"
PROVIDERS = ((PROVIDER_OPENAI, "OpenAI"), (PROVIDER_LOCAL, "Local engine (offline)"))
