from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

# Built CONCURRENTLY: every turn writes this table, and a plain CREATE INDEX would hold those
# writes for the whole scan of its done jobs.


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0002_issuer"),
        ("memory", "0011_document_attempts"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="processingjob",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "running"])),
                fields=["workspace", "kind", "upto_message_id"],
                name="job_unfinished_by_workspace",
            ),
        ),
    ]
