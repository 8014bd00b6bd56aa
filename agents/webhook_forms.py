"""The console's form for a tenant webhook endpoint (the service checks the URL itself)."""

from __future__ import annotations

from typing import Any

from django import forms

from agents.models import Agent, WebhookEndpoint


class WebhookEndpointForm(forms.Form):
    # A plain field: the service's URL check (https, public address) gives the message.
    url = forms.CharField(
        max_length=500, label="URL", help_text="Where the platform POSTs events (https://)."
    )
    agent = forms.ModelChoiceField(
        queryset=Agent.unscoped.none(), required=False, empty_label="All agents",
        help_text="Only this agent's sessions, or every agent's.",
    )  # fmt: skip
    events = forms.MultipleChoiceField(
        choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple
    )
    description = forms.CharField(max_length=200, required=False)
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Inside the console's tenant scope: only this tenant's agents.
        self.fields["agent"].queryset = Agent.objects.order_by("name")  # type: ignore[attr-defined]

    @classmethod
    def initial_for(cls, endpoint: WebhookEndpoint) -> dict[str, Any]:
        return {
            "url": endpoint.url,
            "agent": endpoint.agent_id,
            "events": list(endpoint.events),
            "description": endpoint.description,
            "enabled": endpoint.enabled,
        }
