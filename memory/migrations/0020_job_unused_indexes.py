import django.db.models.deletion
from django.db import migrations, models

# A turn writes three row versions of its extraction job (insert, claim, finish; none HOT: the
# partial indexes' status changes) and two or more of each message; each paid for indexes the
# turns do not need (pg_stat_user_indexes after bench/bench_turn_cpu.py; bench/README.md,
# twenty-fifth session): the job's conversation index and its varchar_pattern_ops twin
# (job_unique_per_range and (conversation, status) lead with conversation_id), the pattern twins
# of the job's primary key and workspace index, and of the message's session index (each
# scanned only for equality, which the plain index serves; no query of them is a LIKE). The
# conversation index and its twin go with the field's db_index (Django drops both).
DROPPED = {
    "memory_processingjob": {
        "memory_processingjob_id_9f4a959e_like": "(id varchar_pattern_ops)",
        "memory_processingjob_workspace_id_a2c93350_like": "(workspace_id varchar_pattern_ops)",
    },
    "memory_message": {
        "memory_message_session_id_905eb8df_like": "(session_id varchar_pattern_ops)",
    },
}


class Migration(migrations.Migration):
    dependencies = [
        ("memory", "0019_memory_unused_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="processingjob",
            name="conversation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="jobs",
                to="memory.conversation",
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
