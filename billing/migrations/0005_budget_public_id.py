"""Budgets get a public id (the dashboard names them in URLs): added empty, filled one
row at a time with its own UUID, then made unique and required."""
import uuid

from django.db import migrations, models


def fill_public_ids(apps, schema_editor):
    Budget = apps.get_model("billing", "Budget")
    for budget in Budget.objects.filter(public_id__isnull=True).only("pk"):
        Budget.objects.filter(pk=budget.pk).update(public_id=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_catalog_models")]

    operations = [
        migrations.AddField(model_name="budget", name="public_id", field=models.UUIDField(null=True, editable=False)),
        migrations.RunPython(fill_public_ids, migrations.RunPython.noop),
        migrations.AlterField(model_name="budget", name="public_id",
                              field=models.UUIDField(default=uuid.uuid4, unique=True, editable=False)),
    ]
