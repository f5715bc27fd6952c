"""Re-install the config-version triggers after tenants 0006 added
`Organization.time_zone`: on SQLite adding a column with a default rebuilds the
organization table and drops its triggers (so org writes stopped invalidating the
gateway's caches); on PostgreSQL the UPDATE OF column list lacked the new column.

Same re-install as gateway 0010 (every trigger dropped and re-created: safe to run again)."""
from django.db import migrations

from gateway.triggers import reinstall_triggers


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0010_config_version_triggers_again"),
        ("tenants", "0006_org_time_zone"),
    ]

    operations = [migrations.RunPython(reinstall_triggers, migrations.RunPython.noop)]
