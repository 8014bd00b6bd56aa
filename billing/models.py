"""The usage ledger (and, with the billing issue, price book, tallies and invoices)."""

from __future__ import annotations

from django.db import models

from tenants.scoping import TenantOwnedModel


class UsageEvent(TenantOwnedModel):
    """One upstream ``response.done`` (or one metered audio span), exactly once.

    Append-only. ``upstream_response_id`` is unique, so a redelivered event changes nothing.
    Cached tokens are a subset of the input tokens of the same modality, as the API reports them.
    Minute-metered models (transcribe, translate) carry ``audio_ms`` instead of tokens.
    """

    session = models.ForeignKey(
        "agents.Session", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    provider = models.CharField(max_length=10, default="openai")  # "local" costs nothing
    model = models.CharField(max_length=40)
    upstream_response_id = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=20, blank=True)
    input_text_tokens = models.PositiveIntegerField(default=0)
    input_audio_tokens = models.PositiveIntegerField(default=0)
    input_image_tokens = models.PositiveIntegerField(default=0)
    cached_text_tokens = models.PositiveIntegerField(default=0)
    cached_audio_tokens = models.PositiveIntegerField(default=0)
    cached_image_tokens = models.PositiveIntegerField(default=0)
    output_text_tokens = models.PositiveIntegerField(default=0)
    output_audio_tokens = models.PositiveIntegerField(default=0)
    audio_ms = models.PositiveBigIntegerField(default=0)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "occurred_at"], name="usage_tenant_occurred"),
            models.Index(fields=["tenant", "session"], name="usage_tenant_session"),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.upstream_response_id}"

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens + self.input_image_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text_tokens + self.output_audio_tokens
