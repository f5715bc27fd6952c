"""Database triggers that bump gateway_configversion on every write to a table the
gateway caches, whatever makes the write (admin, services, a shell, raw SQL).

API keys' `last_used_at` stamps are left out (they change nothing a gateway caches,
and happen all the time). A migration that adds a column to `tenants_apikey` must
recreate these triggers (run `install` again) for the new column to count.
"""
from django.db import migrations

TABLES = [
    ("tenants", "Organization"), ("tenants", "ApiKey"), ("gateway", "ProviderCredential"), ("gateway", "Deployment"),
    ("gateway", "Route"), ("gateway", "RouteCandidate"), ("gateway", "RoutingPolicy"), ("billing", "Budget"),
    ("billing", "RateCard"),
]
NOT_COUNTED = {"last_used_at"}

BUMP_SQLITE = ("INSERT OR IGNORE INTO gateway_configversion (id, version) VALUES (1, 0); "
               "UPDATE gateway_configversion SET version = version + 1 WHERE id = 1;")
PG_FUNCTION = """
CREATE OR REPLACE FUNCTION openclaw_bump_config_version() RETURNS trigger AS $$
BEGIN
  INSERT INTO gateway_configversion (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
  UPDATE gateway_configversion SET version = version + 1 WHERE id = 1;
  RETURN NULL;
END $$ LANGUAGE plpgsql;
"""


def _targets(apps):
    for app_label, model_name in TABLES:
        model = apps.get_model(app_label, model_name)
        columns = [f'"{f.column}"' for f in model._meta.concrete_fields
                   if f.column not in NOT_COUNTED and not f.primary_key]  # quoted: "window" is a keyword
        yield model._meta.db_table, columns


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION)
    for table, columns in _targets(apps):
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
                                      f"BEGIN {BUMP_SQLITE} END")
        # Other databases: no triggers; the caches fall back to their age limit.


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table, _columns in _targets(apps):
        name = f"openclaw_cfg_{table}"
        if vendor == "postgresql":
            schema_editor.execute(f'DROP TRIGGER IF EXISTS {name} ON "{table}"')
        elif vendor == "sqlite":
            for suffix in ("ins", "del", "upd"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}_{suffix}")
    if vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS openclaw_bump_config_version()")


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0007_config_version"),
        ("billing", "0003_token_control"),
        ("tenants", "0003_token_control"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
