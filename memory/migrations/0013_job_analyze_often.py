from django.db import migrations

# The jobs table is mostly finished jobs, so PostgreSQL's default (analyze after 10 % of its rows
# changed) kept statistics that show nothing queued for as long as a backlog lasted: a claim then
# read its job, and its conversation's queued check, through the unfinished jobs' index by age
# rather than by key, filtering every queued job (bench/probe_claim_plans.py). Analyzed after
# every 1,000 changed rows (at most once per autovacuum round, a minute by default), the plans
# follow the backlog within about a minute, whatever the table's size. Measured with 5,000 jobs
# queued behind 100,000 finished: a claim's two statements took 1.0-1.4 and 0.6-0.7 ms of
# PostgreSQL's time; autovacuum analyzed 10 s later and they took 0.020 and 0.055 ms (at the
# default it had not analyzed 150 s later, nor would it before 10,500 more changes).
ANALYZE_OFTEN = (
    "ALTER TABLE memory_processingjob SET"
    " (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000)"
)
DEFAULTS = (
    "ALTER TABLE memory_processingjob RESET"
    " (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)"
)


class Migration(migrations.Migration):
    dependencies = [
        ("memory", "0012_job_unfinished_by_workspace"),
    ]

    operations = [migrations.RunSQL(ANALYZE_OFTEN, reverse_sql=DEFAULTS)]
