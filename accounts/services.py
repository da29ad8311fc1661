import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from accounts import deletion
from accounts.authentication import keys_changed
from accounts.endusers.models import Issuer
from accounts.endusers.tokens import issuers_changed
from accounts.keys import generate_key, key_prefix, peppered_digest
from accounts.models import ApiKey, Workspace
from config.common.errors import NotFound
from config.common.rows import lock_if_present
from config.common.setting import setting

logger = logging.getLogger("engram.accounts")


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    raw_key: str  # the only time the secret exists outside the caller's hands


@transaction.atomic
def workspace_create(*, name: str) -> Workspace:
    return Workspace.objects.create(name=name)


@transaction.atomic
def workspace_rename(*, workspace: Workspace, name: str) -> Workspace:
    workspace.name = name
    workspace.save(update_fields=["name"])
    keys_changed()  # the key cache holds the workspace row
    return workspace


@transaction.atomic
def workspace_delete_begin(*, workspace: Workspace) -> Workspace:
    """Mark the workspace deleted and have a worker delete it (workspace_delete); at once, its
    keys and token issuers are gone on every process, and it is hidden (selectors). Marking
    it again changes nothing (the mark keeps its time). One short transaction: a workspace
    of millions of rows took minutes to delete in the caller's request (an admin's timed out).

    The task is sent on commit; the sweep (workspace_deletions_sweep) sends it again when it
    was lost, as the mark, not the broker, says what is owed."""
    if not lock_if_present(workspace):
        raise NotFound(f"No workspace '{workspace.pk}'.", field="workspace_id")
    workspace.refresh_from_db(fields=["deleted_at", "deletion_sent_at"])
    if workspace.deleted_at is not None:
        return workspace
    now = timezone.now()
    workspace.deleted_at = workspace.deletion_sent_at = now
    workspace.save(update_fields=["deleted_at", "deletion_sent_at"])
    deletion.log_entries_delete(workspace_id=workspace.pk, only=(ApiKey, Issuer))
    deletion.doors_delete(workspace_id=workspace.pk, doors=(ApiKey, Issuer))
    keys_changed()
    issuers_changed()  # its end users' tokens too
    workspace_id = workspace.pk
    transaction.on_commit(lambda: _send_deletion(workspace_id))
    return workspace


def _send_deletion(workspace_id: str) -> None:
    from accounts.tasks import workspace_delete_task
    from config.celery import send

    send(workspace_delete_task, workspace_id, then="the sweep sends it again")


def workspace_deletions_sweep() -> int:
    """Send again the deletions of the workspaces marked (workspace_delete_begin) and still
    present whose last send is ENGRAM_WORKSPACE_DELETION_RESEND_SECONDS old: the task was lost
    (Redis down, its data lost) or its worker died; how many. A deletion still running gets
    the send too, and its second task returns at once (workspace_delete_run's lock)."""
    due = timezone.now() - timedelta(seconds=setting("ENGRAM_WORKSPACE_DELETION_RESEND_SECONDS"))
    ids = list(
        Workspace.objects.filter(deleted_at__isnull=False, deletion_sent_at__lte=due)
        .order_by("deletion_sent_at")
        .values_list("pk", flat=True)[:100]
    )
    sent = 0
    for workspace_id in ids:
        # claimed by compare-and-set: two sweeps at once send it once
        if Workspace.objects.filter(pk=workspace_id, deletion_sent_at__lte=due).update(
            deletion_sent_at=timezone.now()
        ):
            _send_deletion(workspace_id)
            sent += 1
    return sent


def workspace_delete_run(*, workspace_id: str) -> bool:
    """The task's work: delete a workspace marked deleted, unless another run is deleting it
    (a session lock, released when its connection ends: a killed worker holds it no more);
    whether this run did. Safe to run twice, or after a run that was cut short."""
    workspace = Workspace.objects.filter(pk=workspace_id, deleted_at__isnull=False).first()
    if workspace is None:
        return False  # deleted already, or never marked
    lock = f"workspace_delete:{workspace_id}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [lock])
        if not cursor.fetchone()[0]:
            return False
        try:
            workspace_delete(workspace=workspace)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [lock])
    return True


def workspace_delete(*, workspace: Workspace) -> None:
    """Delete a workspace and everything it owns; its keys stop working on every process at once.

    Three steps, each its own transaction: its keys and token issuers go first, so nothing new
    comes in; then its rows, table by table in batches (accounts.deletion: nothing is loaded,
    no lock is held for long), each model's admin log entries before its rows (they keep the
    rows' text: config.admin_log); then, with its row locked, what was written meanwhile and
    the workspace itself. Interrupted, it is safe to call again: it goes on where it stopped.
    Requests and the admin call workspace_delete_begin, which has a worker call this.

    The row lock (config.common.rows.lock_if_present) settles a row of the workspace written
    meanwhile (a usage flush, a turn already past its key check): it either committed before the
    last step, and is deleted with the rest, or waits for it and then fails its own foreign key
    (completions.usage drops such a record). Without the lock, a row committed between the
    collection and the workspace's own delete failed the deletion's commit: a 500
    (tests/test_accounts.py).
    """
    with transaction.atomic():
        if not lock_if_present(workspace):
            return  # deleted meanwhile, by a deletion that tells the caches itself
        deletion.log_entries_delete(workspace_id=workspace.pk, only=(ApiKey, Issuer))
        deletion.doors_delete(workspace_id=workspace.pk, doors=(ApiKey, Issuer))
        keys_changed()
        issuers_changed()  # its end users' tokens too
    with transaction.atomic():
        deletion.log_entries_delete(workspace_id=workspace.pk)
    deletion.rows_delete(workspace_id=workspace.pk, batch=deletion.BATCH_ROWS)
    with transaction.atomic():
        if not lock_if_present(workspace):
            return
        deletion.log_entries_delete(workspace_id=workspace.pk)
        deletion.rows_delete(workspace_id=workspace.pk, batch=None)
        Workspace.objects.filter(pk=workspace.pk)._raw_delete(Workspace.objects.db)
        keys_changed()  # a key made meanwhile
        issuers_changed()
    logger.info("workspace %s deleted", workspace.pk)


def workspace_lock_live(*, workspace: Workspace) -> None:
    """In a transaction opening a door (a key, a token issuer): lock the workspace's row, or
    raise NotFound when it is being deleted. The deletion's mark (workspace_delete_begin) waits
    for the door's commit and deletes it, or the door waits for the mark and is refused: no
    door outlives the mark."""
    if not Workspace.objects.select_for_update().filter(pk=workspace.pk, deleted_at=None):
        raise NotFound(f"No workspace '{workspace.pk}'.", field="workspace_id")


@transaction.atomic
def api_key_create(*, workspace: Workspace, name: str = "") -> CreatedKey:
    workspace_lock_live(workspace=workspace)
    raw = generate_key()
    key = ApiKey.objects.create(
        workspace=workspace, name=name, prefix=key_prefix(raw), digest=peppered_digest(raw)
    )
    return CreatedKey(api_key=key, raw_key=raw)


@transaction.atomic
def api_key_revoke(*, workspace: Workspace, key_id: str) -> ApiKey:
    key = ApiKey.objects.select_for_update().filter(workspace=workspace, id=key_id).first()
    if key is None:
        raise NotFound(f"No API key '{key_id}'.", field="key_id")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        keys_changed()
    return key


@transaction.atomic
def api_key_delete(*, workspace: Workspace, key_id: str) -> None:
    """Delete a key (revoking keeps its row); it stops working on every process at once."""
    ApiKey.objects.filter(workspace=workspace, id=key_id).delete()
    keys_changed()


def api_key_touch(*, key_id: str) -> None:
    """Record use; called at most once a minute per key per process (see authentication)."""
    ApiKey.objects.filter(id=key_id).update(last_used_at=timezone.now())
