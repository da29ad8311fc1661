from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

# Built CONCURRENTLY: every agent turn writes this table, and a plain CREATE INDEX would hold
# those writes for the whole scan of its runs.


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0003_workspace_deleted_at"),
        ("completions", "0009_price_not_negative"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="execution",
            index=models.Index(fields=["workspace", "user_id"], name="execution_user"),
        ),
    ]
