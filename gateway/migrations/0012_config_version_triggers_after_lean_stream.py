"""Re-install the config-version triggers after catalog 0002 added `Deployment.lean_stream`:
on SQLite adding a column can rebuild the deployment table and drop its triggers (so
deployment writes would stop invalidating the gateway's caches); on PostgreSQL the UPDATE OF
column list lacked the new column, so turning the switch would not apply until the caches'
age limit.

Same re-install as gateway 0010 (every trigger dropped and re-created: safe to run again)."""
from django.db import migrations

from gateway.triggers import reinstall_triggers


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0011_config_version_triggers_after_org_time_zone"),
        ("catalog", "0002_deployment_lean_stream"),
    ]

    operations = [migrations.RunPython(reinstall_triggers, migrations.RunPython.noop)]
