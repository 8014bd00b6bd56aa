import secrets

from django.db import migrations


def fill(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    for tenant in Tenant.objects.filter(webhook_signing_secret=""):
        tenant.webhook_signing_secret = "whsec_" + secrets.token_urlsafe(32)
        tenant.save(update_fields=["webhook_signing_secret"])


class Migration(migrations.Migration):
    dependencies = [("tenants", "0005_tenant_webhook_signing_secret")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
