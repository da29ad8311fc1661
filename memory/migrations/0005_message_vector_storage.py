from django.db import migrations


class Migration(migrations.Migration):
    """Keep the vector search reads in the row; the message's own vector may live out of line.

    With two 1.5 kB vectors a message row passes PostgreSQL's 2 kB TOAST threshold, and the
    ranking query would fetch context_embedding from the TOAST table for every candidate.
    """

    dependencies = [
        ("memory", "0004_message_context_embedding"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE memory_message ALTER COLUMN context_embedding SET STORAGE PLAIN, "
            "ALTER COLUMN embedding SET STORAGE EXTERNAL",
            "ALTER TABLE memory_message ALTER COLUMN context_embedding SET STORAGE EXTENDED, "
            "ALTER COLUMN embedding SET STORAGE EXTENDED",
        ),
    ]
