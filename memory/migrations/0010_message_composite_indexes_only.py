import django.db.models.deletion
from django.db import migrations, models

# The single-column indexes of memory_message's workspace and conversation foreign keys, and
# the varchar_pattern_ops twins Django makes for them and for the primary key: the composite
# indexes lead with these columns, no query of them is a LIKE, and each row version of a message
# paid for five more index entries. Only the indexes go (the foreign keys stay as they are).
DROPPED = {
    "memory_message_id_07f7812c_like": "(id varchar_pattern_ops)",
    "memory_message_conversation_id_113f27cd": "(conversation_id)",
    "memory_message_conversation_id_113f27cd_like": "(conversation_id varchar_pattern_ops)",
    "memory_message_workspace_id_f9b7ce26": "(workspace_id)",
    "memory_message_workspace_id_f9b7ce26_like": "(workspace_id varchar_pattern_ops)",
}


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_issuer"),
        ("memory", "0009_processingjob_extractor"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {name}",
                    f"CREATE INDEX IF NOT EXISTS {name} ON memory_message {columns}",
                )
                for name, columns in DROPPED.items()
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="conversation",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="memory.conversation",
                    ),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="workspace",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="accounts.workspace",
                    ),
                ),
            ],
        )
    ]
