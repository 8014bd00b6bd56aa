from django.db import migrations, models

import tenants.models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0006_fill_webhook_signing_secrets")]

    operations = [
        migrations.AlterField(
            model_name="tenant",
            name="webhook_signing_secret",
            field=models.CharField(
                default=tenants.models.new_signing_secret,
                help_text="Signs the platform's calls to the tenant's tool webhooks (HMAC-SHA256).",
                max_length=64,
            ),
        ),
    ]
