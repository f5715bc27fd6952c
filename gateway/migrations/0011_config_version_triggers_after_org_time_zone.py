"""Re-install the config-version triggers after tenants 0006 added
`Organization.time_zone`: on SQLite adding a column with a default rebuilds the
organization table and drops its triggers (so org writes stopped invalidating the
gateway's caches); on PostgreSQL the UPDATE OF column list lacked the new column.

Same install as gateway 0010 (every trigger dropped and re-created: safe to run again)."""
import importlib

from django.db import migrations

_v2 = importlib.import_module("gateway.migrations.0010_config_version_triggers_again")


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0010_config_version_triggers_again"),
        ("tenants", "0006_org_time_zone"),
    ]

    operations = [migrations.RunPython(_v2.install, migrations.RunPython.noop)]
