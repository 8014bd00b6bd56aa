from __future__ import annotations

from django import forms

from tenants.origins import InvalidOrigin
from tenants.services import origins_clean


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, initial="Backend")


class ProviderCredentialForm(forms.Form):
    secret = forms.CharField(
        label="OpenAI API key",
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "placeholder": "sk-…"}),
        min_length=20,
        max_length=300,
    )


class WidgetKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    allowed_origins = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "https://shop.example.com"}),
        help_text="One exact origin per line: scheme, host and port, no path.",
    )

    def clean_allowed_origins(self) -> list[str]:
        lines = [line for line in self.cleaned_data["allowed_origins"].splitlines() if line.strip()]
        if not lines:
            raise forms.ValidationError("List at least one origin.")
        try:
            return origins_clean(lines)
        except InvalidOrigin as error:
            raise forms.ValidationError(str(error)) from None
