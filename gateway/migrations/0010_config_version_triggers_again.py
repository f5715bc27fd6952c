"""Re-install the config-version triggers (migration 0008) after the dashboard's
migrations changed two cached tables: on SQLite, altering a table (billing 0005 made
`Budget.public_id` unique, tenants 0004 added `ApiKey.rotated_from`) rebuilds it and
drops its triggers, so budget and key writes stopped invalidating the gateway's caches;
on PostgreSQL the new columns were missing from the triggers' column lists.

Every trigger is dropped and re-created, so this is safe to run again; a later
migration that alters a cached table must do the same (the routing models live in
`catalog` since gateway 0009, on the same tables)."""
import importlib

from django.db import migrations

_v1 = importlib.import_module("gateway.migrations.0008_config_version_triggers")

TABLES = [
    ("tenants", "Organization"), ("tenants", "ApiKey"), ("catalog", "ProviderCredential"), ("catalog", "Deployment"),
    ("catalog", "Route"), ("catalog", "RouteCandidate"), ("catalog", "RoutingPolicy"), ("billing", "Budget"),
    ("billing", "RateCard"),
]


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(_v1.PG_FUNCTION)
    for app_label, model_name in TABLES:
        model = apps.get_model(app_label, model_name)
        table = model._meta.db_table
        columns = [f'"{f.column}"' for f in model._meta.concrete_fields
                   if f.column not in _v1.NOT_COUNTED and not f.primary_key]  # quoted: "window" is a keyword
        name = f"openclaw_cfg_{table}"
        if vendor == "postgresql":
            schema_editor.execute(f'DROP TRIGGER IF EXISTS {name} ON "{table}"')
            schema_editor.execute(
                f'CREATE TRIGGER {name} AFTER INSERT OR DELETE OR UPDATE OF {", ".join(columns)} ON "{table}" '
                f"FOR EACH STATEMENT EXECUTE FUNCTION openclaw_bump_config_version()")
        elif vendor == "sqlite":
            for event, suffix in (("INSERT", "ins"), ("DELETE", "del"), (f"UPDATE OF {', '.join(columns)}", "upd")):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}_{suffix}")
                schema_editor.execute(f'CREATE TRIGGER {name}_{suffix} AFTER {event} ON "{table}" '
                                      f"BEGIN {_v1.BUMP_SQLITE} END")


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0009_models_moved_to_catalog"),
        ("catalog", "0001_initial"),
        ("billing", "0005_budget_public_id"),
        ("tenants", "0004_dashboard"),
    ]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
