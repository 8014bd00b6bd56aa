from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from agents import catalogue
from tenants.scoping import TenantOwnedModel


class Agent(TenantOwnedModel):
    """A configured realtime agent. The browser never decides any of these fields."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        ARCHIVED = "archived", "Archived"

    name = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    kind = models.CharField(max_length=20, choices=catalogue.KINDS, default=catalogue.VOICE_AGENT)
    provider = models.CharField(
        max_length=10, choices=catalogue.PROVIDERS, default=catalogue.PROVIDER_OPENAI
    )
    model = models.CharField(max_length=40, default="gpt-realtime-2")
    voice = models.CharField(
        max_length=20, choices=[(voice, voice) for voice in catalogue.VOICES], default="marin"
    )
    instructions = models.TextField(blank=True)
    reasoning_effort = models.CharField(
        max_length=10,
        choices=[(effort, effort) for effort in catalogue.REASONING_EFFORTS],
        default=catalogue.DEFAULT_REASONING_EFFORT,
    )
    turn_detection = models.CharField(
        max_length=20,
        choices=catalogue.TURN_DETECTIONS,
        default=catalogue.TURN_DETECTION_SERVER_VAD,
    )
    vad_eagerness = models.CharField(
        max_length=10,
        choices=[(eagerness, eagerness) for eagerness in catalogue.VAD_EAGERNESS],
        default="auto",
    )
    input_audio_format = models.CharField(
        max_length=20, choices=catalogue.AUDIO_FORMATS, default="audio/pcm"
    )
    output_audio_format = models.CharField(
        max_length=20, choices=catalogue.AUDIO_FORMATS, default="audio/pcm"
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty means the model's maximum."
    )
    target_language = models.CharField(
        max_length=8, choices=catalogue.TRANSLATION_LANGUAGES, blank=True
    )
    tools = models.JSONField(default=list, blank=True)
    mcp_servers = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "status", "name"], name="agent_tenant_status")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        allowed_models = catalogue.MODELS_BY_KIND.get(self.kind, ())
        if self.model not in allowed_models:
            raise ValidationError(
                {
                    "model": f"{self.model} is not a {self.get_kind_display()} model; "
                    f"choose {', '.join(allowed_models)}"
                }  # fmt: skip
            )
        if self.kind == catalogue.TRANSLATION and not self.target_language:
            raise ValidationError({"target_language": "A translation agent needs a target."})
