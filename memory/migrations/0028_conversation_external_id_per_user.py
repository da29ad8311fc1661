"""A conversation's and a session's client id is unique per user, not per workspace: one user's
id told another that it was taken (a chat naming it was refused where a free id was created)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_workspace_deleted_at"),
        ("memory", "0027_memoryevent_changes"),
    ]

    # The new index first: the old, stricter constraint holds for every row, and lookups by
    # (workspace, external_id) always have an index (its leading columns).
    operations = [
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.UniqueConstraint(
                fields=("workspace", "external_id", "user_id"),
                name="conversation_user_external_id_unique",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="conversation",
            name="conversation_external_id_unique",
        ),
        migrations.AddConstraint(
            model_name="session",
            constraint=models.UniqueConstraint(
                fields=("workspace", "external_id", "user_id"),
                name="session_user_external_id_unique",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="session",
            name="session_external_id_unique",
        ),
    ]
