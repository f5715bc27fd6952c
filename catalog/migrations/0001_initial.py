"""The model catalogue's tables, moved from the gateway app without touching the database:
the models keep their `gateway_*` tables, so this migration only records them in
Django's state (and re-labels their content types, so admin permissions and history
follow them). billing 0004 then points its foreign keys here and gateway 0009 forgets them."""

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
import uuid
from decimal import Decimal
from django.db import migrations, models

MOVED = ["providercredential", "deployment", "route", "routecandidate", "routingpolicy"]


def _relabel(apps, old, new):
    content_type = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if not content_type.objects.filter(app_label=new, model=model).exists():
            content_type.objects.filter(app_label=old, model=model).update(app_label=new)


def content_types_to_catalog(apps, schema_editor):
    _relabel(apps, "gateway", "catalog")


def content_types_to_gateway(apps, schema_editor):
    _relabel(apps, "catalog", "gateway")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('gateway', '0008_config_version_triggers'),
        ('tenants', '0003_token_control'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay as they are: only Django's picture of which app owns them changes.
            state_operations=[
                migrations.CreateModel(
                    name='ProviderCredential',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('public_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                        ('name', models.CharField(max_length=100)),
                        ('provider', models.CharField(help_text='e.g. openai, anthropic, mock', max_length=50)),
                        ('encrypted_secret', models.TextField(editable=False)),
                        ('last_four', models.CharField(blank=True, editable=False, max_length=4)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ('org', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='credentials', to='tenants.organization')),
                    ],
                    options={
                        'db_table': 'gateway_providercredential',
                    },
                ),
                migrations.CreateModel(
                    name='Deployment',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('public_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                        ('name', models.CharField(max_length=100)),
                        ('provider', models.CharField(help_text='shown to clients in route.provider, e.g. openai, mock', max_length=50)),
                        ('litellm_model', models.CharField(help_text='litellm model string, e.g. openai/gpt-4o', max_length=200)),
                        ('api_base', models.URLField(blank=True)),
                        ('extra_params', models.JSONField(blank=True, default=dict, help_text='extra keyword arguments for litellm')),
                        ('input_price_per_mtok', models.DecimalField(blank=True, decimal_places=6, help_text="USD per million input tokens; empty: litellm's price map for the model", max_digits=14, null=True, validators=[django.core.validators.MinValueValidator(Decimal('0'))])),
                        ('output_price_per_mtok', models.DecimalField(blank=True, decimal_places=6, help_text="USD per million output tokens; empty: litellm's price map for the model", max_digits=14, null=True, validators=[django.core.validators.MinValueValidator(Decimal('0'))])),
                        ('context_window', models.PositiveIntegerField(default=8192)),
                        ('max_output_tokens', models.PositiveIntegerField(default=4096)),
                        ('tags', models.JSONField(blank=True, default=list, help_text='capability tags, e.g. ["legal", "vision"]')),
                        ('region', models.CharField(blank=True, max_length=50)),
                        ('rpm_limit', models.PositiveIntegerField(blank=True, help_text='requests per minute', null=True)),
                        ('tpm_limit', models.PositiveIntegerField(blank=True, help_text='tokens per minute', null=True)),
                        ('max_concurrency', models.PositiveIntegerField(blank=True, help_text='requests in flight', null=True)),
                        ('weight', models.PositiveIntegerField(default=1)),
                        ('enabled', models.BooleanField(default=True)),
                        ('connect_timeout_ms', models.PositiveIntegerField(default=5000)),
                        ('first_token_timeout_ms', models.PositiveIntegerField(default=30000)),
                        ('idle_timeout_ms', models.PositiveIntegerField(default=30000)),
                        ('total_timeout_ms', models.PositiveIntegerField(default=600000)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ('org', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='deployments', to='tenants.organization')),
                        ('credential', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, to='catalog.providercredential')),
                    ],
                    options={
                        'db_table': 'gateway_deployment',
                    },
                ),
                migrations.CreateModel(
                    name='Route',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('public_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                        ('alias', models.CharField(help_text='the name clients send as llm_request.model', max_length=100)),
                        ('strategy', models.CharField(choices=[('cost', 'Cheapest healthy candidate'), ('latency', 'Lowest time to first token'), ('capability', 'Candidates with the required tags, in order'), ('weighted', 'Weighted random'), ('least_busy', 'Fewest requests in flight'), ('fallback', 'Explicit order')], default='fallback', max_length=20)),
                        ('required_tags', models.JSONField(blank=True, default=list, help_text='candidates must carry all of these tags')),
                        ('min_context_window', models.PositiveIntegerField(blank=True, null=True)),
                        ('region', models.CharField(blank=True, help_text='if set, only candidates in this region', max_length=50)),
                        ('max_attempts', models.PositiveSmallIntegerField(default=3, help_text='deployments tried before the first token, at most', validators=[django.core.validators.MinValueValidator(1)])),
                        ('enabled', models.BooleanField(default=True)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ('org', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='routes', to='tenants.organization')),
                    ],
                    options={
                        'db_table': 'gateway_route',
                    },
                ),
                migrations.CreateModel(
                    name='RouteCandidate',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('weight', models.PositiveIntegerField(default=1, help_text='share of traffic for the weighted strategy')),
                        ('position', models.PositiveSmallIntegerField(default=0, help_text='fallback order: lower first')),
                        ('deployment', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='route_candidacies', to='catalog.deployment')),
                        ('route', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='candidates', to='catalog.route')),
                    ],
                    options={
                        'db_table': 'gateway_routecandidate',
                        'ordering': ['position', 'id'],
                    },
                ),
                migrations.CreateModel(
                    name='RoutingPolicy',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('public_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                        ('rules', models.JSONField(blank=True, default=list, help_text='an ordered list of rules: see docs/routing-rules.md')),
                        ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('org', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='routing_policy', to='tenants.organization')),
                    ],
                    options={
                        'verbose_name_plural': 'routing policies',
                        'db_table': 'gateway_routingpolicy',
                    },
                ),
                migrations.AddConstraint(
                    model_name='providercredential',
                    constraint=models.UniqueConstraint(condition=models.Q(('org__isnull', True)), fields=('name',), name='uniq_platform_credential_name'),
                ),
                migrations.AddConstraint(
                    model_name='providercredential',
                    constraint=models.UniqueConstraint(condition=models.Q(('org__isnull', False)), fields=('org', 'name'), name='uniq_org_credential_name'),
                ),
                migrations.AddConstraint(
                    model_name='deployment',
                    constraint=models.UniqueConstraint(condition=models.Q(('org__isnull', True)), fields=('name',), name='uniq_platform_deployment_name'),
                ),
                migrations.AddConstraint(
                    model_name='deployment',
                    constraint=models.UniqueConstraint(condition=models.Q(('org__isnull', False)), fields=('org', 'name'), name='uniq_org_deployment_name'),
                ),
                migrations.AddConstraint(
                    model_name='deployment',
                    constraint=models.CheckConstraint(condition=models.Q(('max_output_tokens__gt', 0)), name='deployment_max_output_positive'),
                ),
                migrations.AddConstraint(
                    model_name='deployment',
                    constraint=models.CheckConstraint(condition=models.Q(('context_window__gt', 0)), name='deployment_context_positive'),
                ),
                migrations.AddConstraint(
                    model_name='deployment',
                    constraint=models.CheckConstraint(condition=models.Q(('input_price_per_mtok__gte', 0), ('output_price_per_mtok__gte', 0)), name='deployment_prices_not_negative'),
                ),
                migrations.AddConstraint(
                    model_name='route',
                    constraint=models.UniqueConstraint(condition=models.Q(('org__isnull', True)), fields=('alias',), name='uniq_platform_route_alias'),
                ),
                migrations.AddConstraint(
                    model_name='route',
                    constraint=models.UniqueConstraint(condition=models.Q(('org__isnull', False)), fields=('org', 'alias'), name='uniq_org_route_alias'),
                ),
                migrations.AddConstraint(
                    model_name='route',
                    constraint=models.CheckConstraint(condition=models.Q(('max_attempts__gte', 1), ('max_attempts__lte', 10)), name='route_attempts_1_to_10'),
                ),
                migrations.AddConstraint(
                    model_name='routecandidate',
                    constraint=models.UniqueConstraint(fields=('route', 'deployment'), name='uniq_route_candidate'),
                ),
                migrations.AddConstraint(
                    model_name='routingpolicy',
                    constraint=models.UniqueConstraint(condition=models.Q(('org__isnull', True)), fields=('org',), name='uniq_platform_policy'),
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_catalog, content_types_to_gateway),
    ]
