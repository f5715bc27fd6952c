# Background checks of an org's audit chain (AuditVerification), and the audit log's
# filter indexes: audit_chain_target_idx serves "events about this target / API key"
# and audit_chain_actor_idx "events by this actor", both in one chain, newest first.

import django.db.models.deletion
import django.utils.timezone
import uuid
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0004_dashboard'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditVerification',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('public_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ('status', models.CharField(choices=[('running', 'Running'), ('ok', 'Intact'), ('broken', 'Broken'), ('failed', 'Could not finish')], default='running', max_length=10)),
                ('checked', models.PositiveBigIntegerField(default=0)),
                ('total', models.PositiveBigIntegerField(default=0)),
                ('last_hash', models.CharField(blank=True, editable=False, help_text='hash of the last event checked: where the next batch resumes', max_length=64)),
                ('first_broken_seq', models.PositiveBigIntegerField(blank=True, null=True)),
                ('message', models.TextField(blank=True)),
                ('started_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['chain', 'target_type', 'target_id', '-seq'], name='audit_chain_target_idx'),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['chain', 'actor', '-seq'], name='audit_chain_actor_idx'),
        ),
        migrations.AddField(
            model_name='auditverification',
            name='org',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='audit_verifications', to='tenants.organization'),
        ),
        migrations.AddField(
            model_name='auditverification',
            name='started_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='auditverification',
            index=models.Index(fields=['org', '-started_at'], name='audit_verify_org_idx'),
        ),
    ]
