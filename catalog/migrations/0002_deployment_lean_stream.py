"""`Deployment.lean_stream`: the per-deployment switch of the lean streaming path
(gateway/providers.py). The deployment table is one the gateway caches: gateway 0012
re-installs the config-version triggers after this (SQLite may rebuild the table and drop
them; PostgreSQL's trigger must list the new column)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='deployment',
            name='lean_stream',
            field=models.BooleanField(default=True, help_text="read the provider's stream without litellm's per-chunk wrapper when it speaks OpenAI's streaming format (openai/... models); off: always through litellm"),
        ),
    ]
