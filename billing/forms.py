"""The tenant's billing profile form (owners and finance, in the console)."""

from __future__ import annotations

from django import forms

from billing.models import TenantBillingProfile

PROFILE_FIELDS = [
    "legal_name", "address", "tax_id", "billing_email", "currency_display",
    "payment_terms_days", "tax_mode", "tax_rate_percent", "tax_note",
]  # fmt: skip


class BillingProfileForm(forms.ModelForm):
    class Meta:
        model = TenantBillingProfile
        fields = PROFILE_FIELDS
        labels = {
            "legal_name": "Legal name",
            "tax_id": "Tax ID (VAT number)",
            "billing_email": "Billing e-mail",
            "currency_display": "Show amounts as",
            "payment_terms_days": "Payment terms (days)",
            "tax_mode": "Tax",
            "tax_rate_percent": "Tax rate (%)",
            "tax_note": "Tax note",
        }
        help_texts = {
            "legal_name": "As on your invoices; your account's name when empty.",
            "currency_display": "Amounts are always billed in US dollars.",
            "tax_rate_percent": "Ignored under reverse charge.",
        }
        widgets = {"address": forms.Textarea(attrs={"rows": 3})}

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("tax_mode") == "reverse_charge" and not cleaned.get("tax_id"):
            self.add_error("tax_id", "Reverse charge needs your tax ID on the invoice.")
        return cleaned
