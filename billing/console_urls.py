"""Console URLs of billing, included under ``t/<tenant_slug>/``."""

from django.urls import path

from billing import views

urlpatterns = [
    path("usage/", views.usage, name="billing-usage"),
    path("usage/export.csv", views.usage_export, name="billing-usage-export"),
    path("usage/caps/", views.spend_cap_save, name="billing-spend-cap"),
    path("usage/budget/", views.budget_save, name="billing-budget"),
    path("usage/billable.csv", views.usage_billable_export, name="billing-usage-billable"),
    path("billing-profile/", views.billing_profile, name="billing-profile"),
    path("invoices/", views.invoice_list, name="invoice-list"),
    path("invoices/draft/", views.invoice_draft, name="invoice-draft"),
    path("invoices/<int:invoice_id>/", views.invoice_detail, name="invoice-detail"),
    path("invoices/<int:invoice_id>/invoice.csv", views.invoice_csv, name="invoice-csv"),
    path("invoices/<int:invoice_id>/invoice.pdf", views.invoice_pdf, name="invoice-pdf"),
    path("invoices/<int:invoice_id>/usage.csv", views.invoice_usage_csv, name="invoice-usage-csv"),
    path(
        "credit-notes/<int:credit_note_id>/credit-note.pdf",
        views.credit_note_pdf,
        name="credit-note-pdf",
    ),
]
