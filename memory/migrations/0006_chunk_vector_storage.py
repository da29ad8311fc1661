from django.db import migrations


class Migration(migrations.Migration):
    """Chunk vectors in the row: the exact scan of a collection read each one from TOAST.

    Measured on 10k chunks (bench/bench_collections.py): see bench/README.md.
    """

    dependencies = [
        ("memory", "0005_message_vector_storage"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE memory_chunk ALTER COLUMN embedding SET STORAGE PLAIN",
            "ALTER TABLE memory_chunk ALTER COLUMN embedding SET STORAGE EXTENDED",
        ),
    ]
