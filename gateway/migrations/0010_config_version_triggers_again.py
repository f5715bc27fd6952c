"""Re-install the config-version triggers (migration 0008) after the dashboard's
migrations changed two cached tables: on SQLite, altering a table (billing 0005 made
`Budget.public_id` unique, tenants 0004 added `ApiKey.rotated_from`) rebuilds it and
drops its triggers, so budget and key writes stopped invalidating the gateway's caches;
on PostgreSQL the new columns were missing from the triggers' column lists.

Every trigger is dropped and re-created, so this is safe to run again; a later
migration that alters a cached table must do the same (`gateway.triggers.reinstall_triggers`;
the routing models live in `catalog` since gateway 0009, on the same tables)."""
from django.db import migrations

from gateway.triggers import reinstall_triggers


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0009_models_moved_to_catalog"),
        ("catalog", "0001_initial"),
        ("billing", "0005_budget_public_id"),
        ("tenants", "0004_dashboard"),
    ]

    operations = [migrations.RunPython(reinstall_triggers, migrations.RunPython.noop)]
