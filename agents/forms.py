from __future__ import annotations

import json

from django import forms

from agents import catalogue
from agents.extraction import SchemaProblem, data_schema_check
from agents.models import DEFAULT_RECORDING_NOTICE, Agent
from agents.realtime import variables as prompt_variables

VARIABLES_EXAMPLE = "customer_name=there\norder_id="

SCHEMA_EXAMPLE = (
    '{\n  "type": "object",\n  "properties": {\n    "order_id": {"type": "string"},\n'
    '    "issue": {"type": "string"},\n    "resolved": {"type": "boolean"}\n  },\n'
    '  "required": ["issue", "resolved"]\n}'
)

EFFORT_HELP = (
    "How long the model thinks before it speaks. minimal and low answer fastest and suit "
    "most conversations; medium and high reason more carefully at the cost of a noticeable "
    "pause; xhigh is for hard problems where a long pause is acceptable."
)


class AgentForm(forms.ModelForm):
    # Text, not Django's JSONField: bad JSON and a schema that is not one get errors that
    # say what is wrong, and the admin's text is shown back as typed.
    analysis_schema = forms.CharField(
        label="Data schema",
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "class": "code", "placeholder": SCHEMA_EXAMPLE}),
        help_text=Agent._meta.get_field("analysis_schema").help_text,
    )

    # One "name=default" per line: simpler to type than JSON, and shown back as typed.
    variables = forms.CharField(
        label="Prompt variables",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "code", "placeholder": VARIABLES_EXAMPLE}),
        help_text="One name=default per line. Use them as {{name}} in the instructions and the "
        "first message; a widget fills them from its data-* attributes (data-customer-name), "
        "an API socket from its query (?var_customer_name=…), a phone call with "
        "{{caller_number}}. A missing value gets the default.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:  # shown as the lines the admin types (none: empty, never "{}")
            declared = self.instance.variables if isinstance(self.instance.variables, dict) else {}
            self.initial["variables"] = "\n".join(f"{k}={v}" for k, v in declared.items())
        # Left out (an API client, an older form): the default model.
        self.fields["analysis_model"].required = False
        self.fields["recording_notice"].required = False  # empty: the default notice
        self.fields["speaks_first"].required = False  # left out: the agent waits for the user
        schema = self.instance.analysis_schema if self.instance.pk else None
        if schema and not self.is_bound:
            self.initial["analysis_schema"] = json.dumps(schema, indent=2)

    def clean_analysis_model(self):
        return self.cleaned_data.get("analysis_model") or catalogue.DEFAULT_ANALYSIS_MODEL

    def clean_analysis_schema(self):
        text = (self.cleaned_data.get("analysis_schema") or "").strip()
        if not text:
            return {}
        try:
            schema = json.loads(text)
        except ValueError as error:
            raise forms.ValidationError(f"Not valid JSON: {error}") from None
        try:
            data_schema_check(schema)
        except SchemaProblem as problem:
            raise forms.ValidationError(str(problem)) from None
        return schema

    class Meta:
        model = Agent
        fields = [
            "name", "kind", "provider", "model", "voice", "instructions", "reasoning_effort",
            "turn_detection", "vad_eagerness", "input_audio_format", "output_audio_format",
            "max_output_tokens", "target_language", "tool_preambles",
            "analysis_enabled", "analysis_model", "analysis_rubric", "analysis_schema",
            "recording_enabled", "recording_notice", "speaks_first", "first_message", "variables",
            "end_call_enabled", "transfer_call_enabled", "transfer_number",
        ]  # fmt: skip
        widgets = {
            "instructions": forms.Textarea(attrs={"rows": 14, "class": "roomy"}),
            "analysis_rubric": forms.Textarea(attrs={"rows": 4}),
            "first_message": forms.Textarea(attrs={"rows": 2}),
            "model": forms.Select(choices=[(m, m) for m in catalogue.ALL_MODELS]),
        }
        # Acronyms as people write them (the model's field names would give "Vad eagerness").
        labels = {
            "vad_eagerness": "VAD eagerness",
            "max_output_tokens": "Maximum output tokens",
            "recording_enabled": "Record sessions",
        }
        help_texts = {
            "voice": "The voice cannot change once a session has produced audio.",
            "reasoning_effort": EFFORT_HELP,
            "vad_eagerness": "Semantic VAD only: how quickly it decides you have finished.",
            "target_language": "Translation agents only.",
            "provider": "The local engine runs offline (a development engine, not an AI).",
        }

    def clean_speaks_first(self) -> str:
        return self.cleaned_data.get("speaks_first") or "user"

    def clean_variables(self) -> dict[str, str]:
        declared: dict[str, str] = {}
        for number, line in enumerate((self.cleaned_data.get("variables") or "").splitlines(), 1):
            if not line.strip():
                continue
            name, _, default = line.partition("=")
            name = name.strip()
            if not prompt_variables.NAME.fullmatch(name):
                raise forms.ValidationError(
                    f"Line {number}: {name!r} is not a variable name (lower-case letters, "
                    "digits and _, starting with a letter)."
                )
            if name in declared:
                raise forms.ValidationError(f"Line {number}: {name} is declared twice.")
            declared[name] = prompt_variables.value_clean(default)
        if len(declared) > prompt_variables.MAX_VARIABLES:
            raise forms.ValidationError(
                f"At most {prompt_variables.MAX_VARIABLES} variables per agent."
            )
        return declared

    def clean_transfer_number(self) -> str:
        # Checked (E.164, needed by transfer_call) by Agent.clean, as for the REST API.
        return (self.cleaned_data.get("transfer_number") or "").replace(" ", "")

    def clean_recording_notice(self) -> str:
        notice = " ".join((self.cleaned_data.get("recording_notice") or "").split())
        return notice or DEFAULT_RECORDING_NOTICE

    def clean(self):
        cleaned = super().clean()
        kind, model = cleaned.get("kind"), cleaned.get("model")
        if kind and model and model not in catalogue.MODELS_BY_KIND.get(kind, ()):
            allowed = ", ".join(catalogue.MODELS_BY_KIND[kind])
            label = "voice agent" if kind == catalogue.VOICE_AGENT else f"{kind} agent"
            self.add_error("model", f"A {label} uses {allowed}.")
        if kind == catalogue.TRANSLATION and not cleaned.get("target_language"):
            self.add_error("target_language", "Choose the language to translate into.")
        return cleaned


class FunctionToolForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="The name the model calls, e.g. lookup_order.")
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=1000,
        help_text="When the model should use this tool.",
    )  # fmt: skip
    parameters = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "class": "code"}),
        initial='{\n  "type": "object",\n  "properties": {},\n  "required": []\n}',
        help_text="A JSON Schema for the arguments.",
    )
    execution = forms.ChoiceField(
        choices=[("webhook", "Call my webhook (server-side)"), ("client", "Send to the client")]
    )
    webhook_url = forms.URLField(label="Webhook URL", required=False, assume_scheme="https")
    timeout_seconds = forms.FloatField(
        label="Timeout (seconds)", initial=10, min_value=0.5, max_value=60
    )
    filler_phrase = forms.CharField(
        max_length=200, required=False,
        help_text="Said while a slow tool runs, e.g. “Let me check that for you.”",
    )  # fmt: skip

    def clean_parameters(self):
        try:
            value = json.loads(self.cleaned_data["parameters"])
        except ValueError as error:
            raise forms.ValidationError(f"Not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("The parameters schema must be a JSON object.")
        return value


class McpServerForm(forms.Form):
    label = forms.CharField(max_length=64)
    url = forms.URLField(label="URL", assume_scheme="https", help_text="The server's https:// URL.")
    allowed_tools = forms.CharField(
        required=False, help_text="Comma-separated tool names; empty allows all."
    )
    authorization = forms.CharField(
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="Optional authorization header value, stored encrypted.",
    )

    def clean_allowed_tools(self):
        return [
            name.strip() for name in self.cleaned_data["allowed_tools"].split(",") if name.strip()
        ]
