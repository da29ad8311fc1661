"""A message's token vectors, packed, in a table of their own (memory.retrieval.late): what
/v1/search compares with the question token by token. Empty until the worker embeds messages;
messages embedded before it have none and rank by the blend alone."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("memory", "0028_conversation_external_id_per_user"),
    ]

    operations = [
        migrations.CreateModel(
            name="MessageTokens",
            fields=[
                (
                    "message",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="memory.message",
                    ),
                ),
                ("packed", models.BinaryField()),
            ],
        ),
    ]
