from __future__ import annotations

from django import forms

from tenants.models import ApiKey, DataPolicy, Role
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


class WidgetKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    agent = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Any agent (the page names it)"
    )
    allowed_origins = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "https://shop.example.com"}),
        help_text="One exact origin per line: scheme, host and port, no path.",
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
    email = forms.EmailField()
    role = forms.ChoiceField(choices=[])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = Role.choices


class AcceptInvitationForm(forms.Form):
    password = forms.CharField(widget=forms.PasswordInput, min_length=10)


class WidgetOriginsForm(forms.Form):
    allowed_origins = WidgetKeyForm.base_fields["allowed_origins"]
    clean_allowed_origins = WidgetKeyForm.clean_allowed_origins


class DataPolicyForm(forms.Form):
    data_policy = forms.ChoiceField(choices=DataPolicy.choices, widget=forms.RadioSelect)
