# The org time zone the usage page shows its periods and days in (billing months stay UTC).

import tenants.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0005_audit_verification'),
    ]

    operations = [
        migrations.AddField(
            model_name='organization',
            name='time_zone',
            field=models.CharField(default='UTC', help_text='IANA time zone the usage page shows days in, e.g. Europe/Paris', max_length=64, validators=[tenants.models.validate_time_zone]),
        ),
    ]
