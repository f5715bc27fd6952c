"""Database triggers that bump gateway_configversion on every write to a table the
gateway caches, whatever makes the write (admin, services, a shell, raw SQL).

The triggers are defined in gateway/triggers.py. This migration names the cached models
by the apps that owned them then (the routing models were the gateway's until 0009).
"""
from django.db import migrations

from gateway.triggers import install_triggers, uninstall_triggers

TABLES = [
    ("tenants", "Organization"), ("tenants", "ApiKey"), ("gateway", "ProviderCredential"), ("gateway", "Deployment"),
    ("gateway", "Route"), ("gateway", "RouteCandidate"), ("gateway", "RoutingPolicy"), ("billing", "Budget"),
    ("billing", "RateCard"),
]


def install(apps, schema_editor):
    install_triggers(apps, schema_editor, TABLES)


def uninstall(apps, schema_editor):
    uninstall_triggers(apps, schema_editor, TABLES)


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0007_config_version"),
        ("billing", "0003_token_control"),
        ("tenants", "0003_token_control"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
