"""The catalogue's models moved from the gateway app to the catalog app without a
database change: an installation that had deployments, routes and budgets before
the move keeps every row, every foreign key and its admin permissions after it."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("catalog", None), ("tenants", "0003_token_control"), ("gateway", "0008_config_version_triggers"),
          ("billing", "0003_token_control"), ("contenttypes", "0002_remove_content_type_name"),
          ("auth", "0012_alter_user_first_name_max_length")]
AFTER = [("catalog", "0001_initial"), ("billing", "0004_catalog_models"), ("gateway", "0009_models_moved_to_catalog")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def _migrate_to_latest():
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_rows_foreign_keys_and_permissions_survive_the_move():
    old = _migrate(BEFORE)
    try:
        org = old.get_model("tenants", "Organization").objects.create(slug="acme", name="Acme")
        credential = old.get_model("gateway", "ProviderCredential").objects.create(
            org=org, name="openai", provider="openai", encrypted_secret="x", last_four="abcd")
        deployment = old.get_model("gateway", "Deployment").objects.create(
            org=org, name="gpt", provider="openai", litellm_model="openai/gpt-4o", credential=credential,
            input_price_per_mtok=Decimal("2.5"), output_price_per_mtok=Decimal("10"))
        route = old.get_model("gateway", "Route").objects.create(org=org, alias="smart")
        old.get_model("gateway", "RouteCandidate").objects.create(route=route, deployment=deployment)
        budget = old.get_model("billing", "Budget").objects.create(
            org=org, name="gpt monthly", limit_usd=Decimal("100"), deployment=deployment, fallback_route=route)
        content_types = old.get_model("contenttypes", "ContentType").objects
        content_types.filter(app_label="catalog").delete()  # as before the move: only gateway's existed
        content_type, _ = content_types.get_or_create(app_label="gateway", model="deployment")
        permission, _ = old.get_model("auth", "Permission").objects.get_or_create(
            content_type=content_type, codename="change_deployment", defaults={"name": "Can change deployment"})
    finally:
        _migrate(AFTER)
        _migrate_to_latest()  # the checks below use today's models

    from billing.models import Budget
    from catalog.models import Deployment, Route
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    moved = Deployment.objects.get(pk=deployment.pk)
    assert (moved.name, moved.credential_id, moved.input_price_per_mtok) == ("gpt", credential.pk, Decimal("2.5"))
    assert list(Route.objects.get(pk=route.pk).candidates.values_list("deployment_id", flat=True)) == [deployment.pk]
    moved_budget = Budget.objects.get(pk=budget.pk)
    assert moved_budget.deployment == moved and moved_budget.fallback_route_id == route.pk
    # The content type was relabelled, not replaced: permissions granted before still apply.
    assert ContentType.objects.get(pk=content_type.pk).app_label == "catalog"
    assert Permission.objects.get(pk=permission.pk).content_type == ContentType.objects.get_for_model(Deployment)
