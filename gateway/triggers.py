"""The configuration-version triggers: database triggers that bump gateway_configversion
on every write to a table the gateway caches, whatever makes the write (admin, services,
a shell, raw SQL). The caches watch that version (gateway/freshness.py).

API keys' `last_used_at` stamps are left out (they change nothing a gateway caches, and
happen all the time). On PostgreSQL a trigger lists the columns whose updates count, and
on SQLite altering a table may rebuild it and drop its triggers: so a migration that adds
a column to a cached table (or alters one) must be followed by a gateway migration that
re-installs them, which is one operation:

    migrations.RunPython(reinstall_triggers, migrations.RunPython.noop)

Migrations run this code (gateway 0008, 0010, 0011, 0012 and later ones), each on the
historical models Django hands it: it imports nothing of the project and reads no
current model, and what it executes must stay what those migrations executed. A new
cached table is appended to `CACHED_MODELS` (the migrations that ran before its model
existed skip it) and installed by a new migration; a changed trigger body is a new
migration too, never an edit that changes what the old ones did.
"""
from __future__ import annotations

NOT_COUNTED = {"last_used_at"}

# The cached tables, by the app that owns each model since gateway 0009 (the routing
# models moved to `catalog` there, keeping their tables; gateway 0008 names them by
# their old app).
CACHED_MODELS = [
    ("tenants", "Organization"), ("tenants", "ApiKey"), ("catalog", "ProviderCredential"), ("catalog", "Deployment"),
    ("catalog", "Route"), ("catalog", "RouteCandidate"), ("catalog", "RoutingPolicy"), ("billing", "Budget"),
    ("billing", "RateCard"),
]

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
SQLITE_EVENTS = ("ins", "del", "upd")


def _targets(apps, models):
    """Each cached table of the historical state `apps`, with the columns whose updates count."""
    for app_label, model_name in models:
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:
            continue  # a table cached later than this migration: not created yet
        columns = [f'"{f.column}"' for f in model._meta.concrete_fields
                   if f.column not in NOT_COUNTED and not f.primary_key]  # quoted: "window" is a keyword
        yield model._meta.db_table, columns


def install_triggers(apps, schema_editor, models=CACHED_MODELS) -> None:
    """Drop and re-create the trigger of each table of `models` (safe to run again)."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION)
    for table, columns in _targets(apps, models):
        name = f"openclaw_cfg_{table}"
        if vendor == "postgresql":
            schema_editor.execute(f'DROP TRIGGER IF EXISTS {name} ON "{table}"')
            schema_editor.execute(
                f'CREATE TRIGGER {name} AFTER INSERT OR DELETE OR UPDATE OF {", ".join(columns)} ON "{table}" '
                f"FOR EACH STATEMENT EXECUTE FUNCTION openclaw_bump_config_version()")
        elif vendor == "sqlite":
            events = ("INSERT", "DELETE", f"UPDATE OF {', '.join(columns)}")
            for event, suffix in zip(events, SQLITE_EVENTS):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}_{suffix}")
                schema_editor.execute(f'CREATE TRIGGER {name}_{suffix} AFTER {event} ON "{table}" '
                                      f"BEGIN {BUMP_SQLITE} END")
        # Other databases: no triggers; the caches fall back to their age limit.


def reinstall_triggers(apps, schema_editor) -> None:
    """Every cached table's trigger, dropped and re-created: the operation of a migration
    that follows one adding a column to (or altering) a cached table."""
    install_triggers(apps, schema_editor, CACHED_MODELS)


def uninstall_triggers(apps, schema_editor, models=CACHED_MODELS) -> None:
    vendor = schema_editor.connection.vendor
    for table, _columns in _targets(apps, models):
        name = f"openclaw_cfg_{table}"
        if vendor == "postgresql":
            schema_editor.execute(f'DROP TRIGGER IF EXISTS {name} ON "{table}"')
        elif vendor == "sqlite":
            for suffix in SQLITE_EVENTS:
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}_{suffix}")
    if vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS openclaw_bump_config_version()")
