from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

# The column has a database default: a process of the previous release (a rolling deploy)
# inserts messages without naming it. The index is built CONCURRENTLY: every turn writes this
# table, and a plain CREATE INDEX would hold those writes for the whole scan.


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0003_workspace_deleted_at"),
        ("memory", "0023_memory_by_hand"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="import_key",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text=(
                    "the Idempotency-Key of the import that stored it: its retry stores nothing"
                ),
                max_length=200,
            ),
        ),
        AddIndexConcurrently(
            model_name="message",
            index=models.Index(
                condition=models.Q(("import_key", ""), _negated=True),
                fields=["conversation", "import_key"],
                name="message_import_key",
            ),
        ),
    ]
