"""The configuration-version triggers' definitions (gateway/triggers.py): what the
migrations install. That writes to each cached table bump the version is tested in
tests/gateway/test_freshness.py."""
from django.apps import apps
from django.db import connection

from gateway.triggers import CACHED_MODELS


def test_every_cached_model_exists_so_none_is_skipped_silently():
    # The migrations skip a model missing from their historical state (cached later
    # than them); a misspelt name would be skipped everywhere without this check.
    for app_label, model_name in CACHED_MODELS:
        assert apps.get_model(app_label, model_name)._meta.db_table


def test_every_cached_table_has_its_trigger_after_the_migrations(db):
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        else:
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        names = {row[0] for row in cursor.fetchall()}
    for app_label, model_name in CACHED_MODELS:
        table = apps.get_model(app_label, model_name)._meta.db_table
        expected = ({f"openclaw_cfg_{table}_{event}" for event in ("ins", "del", "upd")}
                    if connection.vendor == "sqlite" else {f"openclaw_cfg_{table}"})
        assert expected <= names, table
