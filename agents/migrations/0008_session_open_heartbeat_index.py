# The abandoned-session sweep reads open sessions by heartbeat, every heartbeat interval.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0007_session_end_reasons_slow_reader_internal_error"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="session",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", True)),
                fields=["heartbeat_at"],
                name="session_open_heartbeat",
            ),
        ),
    ]
