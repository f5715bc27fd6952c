"""The catalogue's models now belong to the catalog app (catalog 0001): the gateway
app forgets them; their tables stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0004_catalog_models'),
        ('gateway', '0008_config_version_triggers'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay as they are: only Django's picture of which app owns them changes.
            state_operations=[
                migrations.RemoveField(
                    model_name='routecandidate',
                    name='deployment',
                ),
                migrations.RemoveField(
                    model_name='providercredential',
                    name='org',
                ),
                migrations.RemoveField(
                    model_name='route',
                    name='org',
                ),
                migrations.RemoveField(
                    model_name='routecandidate',
                    name='route',
                ),
                migrations.RemoveField(
                    model_name='routingpolicy',
                    name='org',
                ),
                migrations.DeleteModel(
                    name='Deployment',
                ),
                migrations.DeleteModel(
                    name='ProviderCredential',
                ),
                migrations.DeleteModel(
                    name='Route',
                ),
                migrations.DeleteModel(
                    name='RouteCandidate',
                ),
                migrations.DeleteModel(
                    name='RoutingPolicy',
                ),
            ],
            database_operations=[],
        ),
    ]
