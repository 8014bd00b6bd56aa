"""Console forms of billing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from billing.budgets import budget_amount_problem


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
