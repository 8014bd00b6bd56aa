from __future__ import annotations

from django import forms

from tenants.models import (
    API_KEY_SCOPES,
    RETENTION_MAX_DAYS,
    RETENTION_MIN_DAYS,
    WIDGET_APPEARANCE_FIELDS,
    ApiKey,
    DataPolicy,
    Role,
    Tenant,
    WidgetKey,
)
from tenants.origins import InvalidOrigin
from tenants.services import origins_clean


def _active_agents():
    agent = ApiKey.agent_model()
    return agent.objects.filter(status=agent.Status.ACTIVE).order_by("name")


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, initial="Backend")
    default_agent = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="(pass ?agent=<id>)"
    )
    scopes = forms.MultipleChoiceField(
        choices=[
            ("realtime", "Realtime (sockets, client secrets)"),
            ("read", "Read (REST API)"),
            ("write", "Write (REST API)"),
        ],
        initial=list(API_KEY_SCOPES),
        widget=forms.CheckboxSelectMultiple,
        help_text="What the key may do. A backend that only opens sessions needs Realtime.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["default_agent"].queryset = _active_agents()


class ProviderCredentialForm(forms.Form):
    secret = forms.CharField(
        label="OpenAI API key",
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "placeholder": "sk-…"}),
        min_length=20,
        max_length=300,
    )


VERSION_PIN_HELP = (
    "Empty: the widget runs whichever version of the agent is live. A number: it runs that "
    "published version of the key's agent, whatever is published later."
)


class WidgetKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    agent = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Any agent (the page names it)"
    )
    allowed_origins = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "https://shop.example.com"}),
        help_text="One exact origin per line: scheme, host and port, no path.",
    )
    version = forms.IntegerField(
        label="Pin to version",
        required=False,
        min_value=1,
        help_text=VERSION_PIN_HELP,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].queryset = _active_agents()

    def clean_allowed_origins(self) -> list[str]:
        lines = [line for line in self.cleaned_data["allowed_origins"].splitlines() if line.strip()]
        if not lines:
            raise forms.ValidationError("List at least one origin.")
        try:
            return origins_clean(lines)
        except InvalidOrigin as error:
            raise forms.ValidationError(str(error)) from None


class InvitationForm(forms.Form):
    email = forms.EmailField(label="E-mail")
    # The least power by default: an owner is made on purpose, never by leaving a default.
    role = forms.ChoiceField(choices=[], initial=Role.VIEWER)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = Role.choices


class AcceptInvitationForm(forms.Form):
    password = forms.CharField(widget=forms.PasswordInput, min_length=10)


class WidgetVersionForm(forms.Form):
    version = forms.IntegerField(
        label="Pin to version", required=False, min_value=1, help_text=VERSION_PIN_HELP
    )


class WidgetOriginsForm(forms.Form):
    allowed_origins = WidgetKeyForm.base_fields["allowed_origins"]
    clean_allowed_origins = WidgetKeyForm.clean_allowed_origins


class WidgetAppearanceForm(forms.ModelForm):
    """The widget's look; the model's validators (``#rrggbb``, the choices, the length) apply.
    The inputs carry ``data-preview`` so static/console/widget-preview.js redraws as you type."""

    class Meta:
        model = WidgetKey
        fields = WIDGET_APPEARANCE_FIELDS
        widgets = {
            "accent_colour": forms.TextInput(attrs={"type": "color"}),
            "text_colour": forms.TextInput(attrs={"type": "color"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            field.widget.attrs["data-preview"] = name


def _retention_days(label: str, help_text: str) -> forms.IntegerField:
    bounds = (
        f"Keep it at least {RETENTION_MIN_DAYS} day and at most {RETENTION_MAX_DAYS} days, "
        "or leave it empty to keep it forever."
    )
    return forms.IntegerField(
        label=label,
        required=False,
        min_value=RETENTION_MIN_DAYS,
        max_value=RETENTION_MAX_DAYS,
        help_text=help_text,
        error_messages={"min_value": bounds, "max_value": bounds, "invalid": "Enter whole days."},
        widget=forms.NumberInput(attrs={"placeholder": "forever", "min": RETENTION_MIN_DAYS}),
    )


class RetentionForm(forms.Form):
    """Days after a session ends that its content is kept (empty: forever)."""

    retention_transcript_days = _retention_days(
        "Transcripts (days)", "Transcripts and the summaries made from them."
    )
    retention_recording_days = _retention_days("Recordings (days)", "Audio of both sides.")
    retention_analysis_days = _retention_days(
        "Analysis (days)", "Post-call summaries, evaluations and extracted data."
    )


class ErasureForm(forms.Form):
    """One end user, by the id the tenant passes for them or by the hash the console shows."""

    end_user = forms.CharField(
        label="End-user ID", required=False, max_length=200, strip=False,
        help_text=(
            "As your site or backend passes it (the widget's user, the API's ?user=); a phone "
            "caller as phone:+14155550100."
        ),
    )  # fmt: skip
    end_user_hash = forms.CharField(
        label="Or end-user hash", required=False, max_length=64,
        help_text="32 hexadecimal digits, as a session page shows it.",
    )  # fmt: skip

    def clean(self):
        cleaned = super().clean()
        end_user, hashed = cleaned.get("end_user", ""), cleaned.get("end_user_hash", "").strip()
        if bool(end_user.strip()) == bool(hashed):
            raise forms.ValidationError("Give either the end user id or the end-user hash.")
        cleaned["end_user_hash"] = hashed  # its format is checked by the erasure itself
        return cleaned


class DataPolicyForm(forms.Form):
    data_policy = forms.ChoiceField(choices=DataPolicy.choices, widget=forms.RadioSelect)
    # Left out (an older form, a script): the tenant's current one stays.
    recording_policy = forms.ChoiceField(
        choices=Tenant.RecordingPolicy.choices, widget=forms.RadioSelect, required=False
    )
