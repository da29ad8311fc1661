"""The accounts' background work: a task takes ids and calls a service (safe to run twice)."""

from celery import shared_task

from config.celery import time_limits


@shared_task(
    name="accounts.workspace_delete",
    acks_late=True,
    ignore_result=True,
    **time_limits("accounts.workspace_delete"),
)
def workspace_delete_task(workspace_id: str) -> None:
    """Delete a workspace marked deleted (services.workspace_delete_begin). A run cut short
    (its time limit, its worker lost) is sent again by the sweep and goes on where it stopped."""
    from accounts.services import workspace_delete_run

    workspace_delete_run(workspace_id=workspace_id)
