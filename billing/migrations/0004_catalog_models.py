"""Billing's foreign keys now name the catalogue's models (same tables, same columns)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0003_token_control'),
        ('catalog', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay as they are: only Django's picture of which app owns them changes.
            state_operations=[
                migrations.AlterField(
                    model_name='budget',
                    name='deployment',
                    field=models.ForeignKey(blank=True, help_text='count only requests served by this deployment', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='budgets', to='catalog.deployment'),
                ),
                migrations.AlterField(
                    model_name='budget',
                    name='fallback_route',
                    field=models.ForeignKey(blank=True, help_text='where requests go once a filtered budget is used up', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='catalog.route'),
                ),
                migrations.AlterField(
                    model_name='budget',
                    name='route',
                    field=models.ForeignKey(blank=True, help_text='count only requests served through this route', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='budgets', to='catalog.route'),
                ),
                migrations.AlterField(
                    model_name='ratecard',
                    name='deployment',
                    field=models.ForeignKey(blank=True, help_text='empty: applies to every deployment without its own line', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='catalog.deployment'),
                ),
                migrations.AlterField(
                    model_name='usagerecord',
                    name='deployment',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='catalog.deployment'),
                ),
                migrations.AlterField(
                    model_name='usagerecord',
                    name='via_route',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='catalog.route'),
                ),
            ],
            database_operations=[],
        ),
    ]
