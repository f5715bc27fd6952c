# The request log's queries (billing/request_log.py), each an index range scan:
#   usage_log_org_idx         an org's records newest first, keyset on (started_at, request_id)
#   usage_log_key_idx         ... of one API key           (filter "key")
#   usage_log_model_idx       ... of one requested model    (filter "model")
#   usage_log_deployment_idx  ... of one deployment         (filter "deployment")
#   usage_log_end_user_idx    ... of one end user           (filter "end_user")
#   usage_log_status_idx      ... with one status           (filter "status")
# A date range narrows the same scans (started_at is each index's last column).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0005_budget_public_id'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='usagerecord',
            index=models.Index(fields=['org', '-started_at', '-request_id'], name='usage_log_org_idx'),
        ),
        migrations.AddIndex(
            model_name='usagerecord',
            index=models.Index(fields=['org', 'api_key', '-started_at'], name='usage_log_key_idx'),
        ),
        migrations.AddIndex(
            model_name='usagerecord',
            index=models.Index(fields=['org', 'requested_model', '-started_at'], name='usage_log_model_idx'),
        ),
        migrations.AddIndex(
            model_name='usagerecord',
            index=models.Index(fields=['org', 'deployment_name', '-started_at'], name='usage_log_deployment_idx'),
        ),
        migrations.AddIndex(
            model_name='usagerecord',
            index=models.Index(fields=['org', 'end_user', '-started_at'], name='usage_log_end_user_idx'),
        ),
        migrations.AddIndex(
            model_name='usagerecord',
            index=models.Index(fields=['org', 'status', '-started_at'], name='usage_log_status_idx'),
        ),
    ]
