"""Console forms of billing: the tenant's monthly budget and its billing profile (owners and
finance)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from billing.budgets import budget_amount_problem
from billing.models import TaxMode, TenantBillingProfile


class MonthlyBudgetForm(forms.Form):
    """The tenant's monthly budget (billed USD), up to the platform's ceiling; empty: none."""

    monthly_budget_usd = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=12,
        decimal_places=2,
        label="Monthly budget (USD, billed)",
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0", "placeholder": "500.00"}),
    )

    def __init__(self, *args: Any, ceiling: Decimal | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ceiling = ceiling
        if ceiling is not None:
            self.fields["monthly_budget_usd"].widget.attrs["max"] = f"{ceiling:.2f}"
            self.fields["monthly_budget_usd"].help_text = (
                f"At most ${ceiling:,.2f} (the platform's ceiling for this account). Empty: "
                f"no budget of your own, the ceiling applies."
            )
        else:
            self.fields["monthly_budget_usd"].help_text = "Empty: no monthly budget."

    def clean_monthly_budget_usd(self) -> Decimal | None:
        amount = self.cleaned_data.get("monthly_budget_usd")
        problem = budget_amount_problem(amount=amount, ceiling=self.ceiling)
        if problem:
            raise forms.ValidationError(problem)
        return amount


# What the tenant writes. Payment terms and tax are the platform's to set (admin): a tenant
# choosing its own tax rate could invoice itself at 0 %.
PROFILE_FIELDS = ["legal_name", "address", "tax_id", "billing_email", "currency_display"]


class BillingProfileForm(forms.ModelForm):
    class Meta:
        model = TenantBillingProfile
        fields = PROFILE_FIELDS
        labels = {
            "legal_name": "Legal name",
            "tax_id": "Tax ID (VAT number)",
            "billing_email": "Billing e-mail",
            "currency_display": "Show amounts as",
        }
        help_texts = {
            "legal_name": "As on your invoices; your account's name when empty.",
            "currency_display": "Amounts are always billed in US dollars.",
        }
        widgets = {"address": forms.Textarea(attrs={"rows": 3})}

    def clean(self):
        cleaned = super().clean()
        if self.instance.tax_mode == TaxMode.REVERSE_CHARGE and not cleaned.get("tax_id"):
            self.add_error("tax_id", "Reverse charge needs your tax ID on the invoice.")
        return cleaned
