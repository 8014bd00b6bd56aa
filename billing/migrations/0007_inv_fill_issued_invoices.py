"""Invoices issued before statuses and totals: open, total = subtotal (no tax was charged),
dated by their issue, due after the default 30 days. Their old numbers (SLUG-YYYY-MM) stay."""

from datetime import UTC, timedelta

from django.db import migrations


def fill(apps, schema_editor):
    Invoice = apps.get_model("billing", "Invoice")
    for invoice in Invoice.objects.filter(status="issued").iterator():
        issue_date = (invoice.issued_at or invoice.created_at).astimezone(UTC).date()
        Invoice.objects.filter(pk=invoice.pk).update(
            status="open",
            total=invoice.billed_total,
            issue_date=issue_date,
            due_date=issue_date + timedelta(days=30),
        )


def unfill(apps, schema_editor):
    Invoice = apps.get_model("billing", "Invoice")
    Invoice.objects.exclude(status="draft").update(status="issued")


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_invoice_profiles_numbering")]

    operations = [migrations.RunPython(fill, unfill)]
