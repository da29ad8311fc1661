import django.db.models.deletion
from django.db import migrations, models

# Indexes the turns do not need, that every row version of a memory (and every source link)
# paid for (pg_stat_user_indexes after bench/bench_turn_cpu.py; bench/README.md, twenty-fifth
# session): memory_memory's GIN of `search` (never scanned: the ranking matches words on the
# user's rows read through the btree indexes, fenced by OFFSET 0), its workspace index (never
# scanned) and the varchar_pattern_ops twins of it and of the primary key (scanned only for
# equality, which the composite indexes leading with workspace and the primary key serve; no
# query of them is a LIKE); the memory_memory_sources link table's memory_id index and pattern
# twins (never scanned: its unique (memory_id, message_id) index leads with memory_id).
DROPPED = {
    "memory_memory": {"memory_memory_id_f80b7899_like": "(id varchar_pattern_ops)"},
    "memory_memory_sources": {
        "memory_memory_sources_memory_id_7d9906d0": "(memory_id)",
        "memory_memory_sources_memory_id_7d9906d0_like": "(memory_id varchar_pattern_ops)",
        "memory_memory_sources_message_id_48f66b35_like": "(message_id varchar_pattern_ops)",
    },
}


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_workspace_deleted_at"),
        ("memory", "0018_conversation_created_at_database_clock"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="memory", name="memory_search_gin"),
        migrations.AlterField(
            model_name="memory",
            name="workspace",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="accounts.workspace",
            ),
        ),
        *(
            migrations.RunSQL(
                f"DROP INDEX IF EXISTS {name}",
                f"CREATE INDEX IF NOT EXISTS {name} ON {table} {columns}",
            )
            for table, names in DROPPED.items()
            for name, columns in names.items()
        ),
    ]
