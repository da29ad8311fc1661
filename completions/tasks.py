"""The gateway's background work: a task takes ids and calls a service (safe to run twice)."""

from celery import shared_task

from completions import services


@shared_task(name="completions.usage_forget_user", ignore_result=True)
def usage_forget_user_task(*, workspace_id: str, user_id: str) -> None:
    """An erasure's second pass over usage records (services.usage_erase)."""
    services.usage_erasure_finish(workspace_id=workspace_id, user_id=user_id)
