from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

# Built CONCURRENTLY: every request writes this table (the usage buffer's COPY), and a plain
# CREATE INDEX would hold those writes for the whole scan of the records.


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0003_workspace_deleted_at"),
        ("completions", "0012_price_cache_write_and_usage_cache_tokens"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="usagerecord",
            index=models.Index(fields=["workspace", "user_id", "created_at"], name="usage_user"),
        ),
    ]
