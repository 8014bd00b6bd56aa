from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0004_audit_and_invitations")]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="webhook_signing_secret",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
    ]
