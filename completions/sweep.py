"""Celery beat's tick over every app's lost work, `memory.sweep_jobs` (its name, queue,
time limits and schedule as when it stood in memory/tasks.py): it calls the sweeps of
accounts, completions, their tools and memory, so it stands above them all. In memory.tasks
it tied memory's workers to the tools' services, whose runs store their turns through
memory's services: one import circle through both apps. Registered by CompletionsConfig.ready.
"""

import logging

from celery import shared_task

from config.celery import time_limits

logger = logging.getLogger("engram.memory")  # the logger it wrote to from memory.tasks


@shared_task(name="memory.sweep_jobs", ignore_result=True, **time_limits("memory.sweep_jobs"))
def sweep_jobs() -> None:
    """Celery beat's tick: send again the jobs whose send or worker was lost; resolve the
    tool approvals nobody decided in time as rejected; do the erasures' second passes over
    usage records whose task was lost; send again the workspace deletions lost."""
    from accounts.services import workspace_deletions_sweep
    from completions.services import usage_erasures_sweep
    from completions.tools.services import approvals_expire
    from memory.services.sweep import jobs_sweep

    swept = jobs_sweep()
    if swept.sent or swept.failed or swept.documents:
        logger.info("sweep: %s", swept)
    approvals_expire()
    if erased := usage_erasures_sweep():
        logger.info("sweep: %d erasure(s)' second pass over usage records", erased)
    if deletions := workspace_deletions_sweep():
        logger.info("sweep: %d workspace deletion(s) sent again", deletions)
