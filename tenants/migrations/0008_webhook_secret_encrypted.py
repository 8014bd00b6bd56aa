"""The webhook signing secret moves to an encrypted column (with a previous one for overlap)."""

from django.db import migrations, models


def encrypt_secrets(apps, schema_editor):
    from tenants import crypto
    from tenants.models import mask_signing_secret, new_signing_secret

    Tenant = apps.get_model("tenants", "Tenant")
    for tenant in Tenant.objects.all():
        secret = tenant.webhook_signing_secret or new_signing_secret()
        tenant.webhook_secret_encrypted = crypto.encrypt(secret)
        tenant.webhook_secret_masked = mask_signing_secret(secret)
        tenant.save(update_fields=["webhook_secret_encrypted", "webhook_secret_masked"])


def decrypt_secrets(apps, schema_editor):
    from tenants import crypto

    Tenant = apps.get_model("tenants", "Tenant")
    for tenant in Tenant.objects.exclude(webhook_secret_encrypted=""):
        tenant.webhook_signing_secret = crypto.decrypt(tenant.webhook_secret_encrypted)
        tenant.save(update_fields=["webhook_signing_secret"])


class Migration(migrations.Migration):
    dependencies = [("tenants", "0007_webhook_signing_secret_default")]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="webhook_secret_encrypted",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="webhook_secret_masked",
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.AddField(
            model_name="tenant",
            name="webhook_secret_previous_encrypted",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="webhook_secret_previous_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="webhook_secret_shown",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(encrypt_secrets, decrypt_secrets),
        migrations.RemoveField(model_name="tenant", name="webhook_signing_secret"),
    ]
