"""Writes for the gateway's configuration: the API and the admin both call these, and each
invalidates the workspace's cached routes (completions.routing), so a change made in this
process applies to its next request; other processes see it within ENGRAM_ROUTING_CACHE_SECONDS.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.keys import peppered_digest
from accounts.models import Workspace
from completions import routing
from completions.models import Dialect, ModelAlias, ProviderCredential, UsageErasure, UsageRecord

logger = logging.getLogger("engram.usage")


@transaction.atomic
def provider_credential_set(
    *,
    workspace: Workspace,
    provider: str,
    secret: str | None = None,
    base_url: str = "",
    dialect: str = Dialect.AUTO,
) -> ProviderCredential:
    """Create or update the workspace's credential for `provider`; secret None keeps the old one.
    `dialect`: an OpenAI-compatible upstream's (completions.models.Dialect)."""
    credential = (
        ProviderCredential.objects.select_for_update()
        .filter(workspace=workspace, provider=provider)
        .first()
    ) or ProviderCredential(workspace=workspace, provider=provider)
    credential.base_url = base_url
    credential.dialect = dialect
    if secret is not None:
        credential.set_secret(secret)
    credential.save()
    routing.invalidate(workspace.id)
    return credential


@transaction.atomic
def provider_credential_delete(*, workspace: Workspace, provider: str) -> None:
    """Remove the workspace's credential for `provider` (nothing to do if there is none)."""
    ProviderCredential.objects.filter(workspace=workspace, provider=provider).delete()
    routing.invalidate(workspace.id)


@transaction.atomic
def model_alias_set(
    *, workspace: Workspace, alias: str, target_model: str, provider: str = ""
) -> ModelAlias:
    obj, _ = ModelAlias.objects.update_or_create(
        workspace=workspace,
        alias=alias,
        defaults={"target_model": target_model, "provider": provider},
    )
    routing.invalidate(workspace.id)
    return obj


@transaction.atomic
def model_alias_delete(*, workspace: Workspace, alias: str) -> None:
    """Remove the workspace's alias (nothing to do if there is none)."""
    ModelAlias.objects.filter(workspace=workspace, alias=alias).delete()
    routing.invalidate(workspace.id)


# --- a user's erasure ---------------------------------------------------------------------------

ERASED_PREFIX = "erased:"
# A usage record still in a process's buffer at the erasure (written within
# ENGRAM_USAGE_FLUSH_SECONDS, 1 s) names the user: a second pass this long after renames those.
ERASED_AGAIN_SECONDS = 5
ERASURES_BATCH = 100  # second passes per sweep


def erased_user_id(*, workspace_id: str, user_id: str) -> str:
    """The pseudonym an erased user's usage records keep: a keyed digest (the key pepper), so
    the id cannot be read back from it, and the user's budget still counts what it spent."""
    return ERASED_PREFIX + peppered_digest(f"{workspace_id}\x1f{user_id}")[:32]


def usage_erase(*, workspace: Workspace, user_id: str) -> int:
    """An erased user's usage records (memory.services.user_delete) under `erased_user_id`,
    now and again ERASED_AGAIN_SECONDS after the commit; how many were renamed now. They stay
    for billing and budgets.

    The second pass is owed in the database (UsageErasure), in the erasure's transaction: the
    task sent on commit does it on time, and the sweep (usage_erasures_sweep) does it when the
    task was lost (Redis down at the send, or its data lost before the countdown ended)."""
    due = timezone.now() + timedelta(seconds=ERASED_AGAIN_SECONDS)
    UsageErasure.objects.bulk_create(
        [UsageErasure(workspace=workspace, user_id=user_id, due_at=due)],
        update_conflicts=True,  # erased again before the pass: one pass, at the later time
        unique_fields=["workspace", "user_id"],
        update_fields=["due_at"],
    )
    transaction.on_commit(lambda: _usage_forget_later(workspace.id, user_id))
    return usage_forget_user(workspace_id=workspace.id, user_id=user_id)


def usage_forget_user(*, workspace_id: str, user_id: str) -> int:
    """The user's usage records under their pseudonym, without the client's own request id (the
    client's words: often an order or ticket number, or the user's email); how many were
    renamed (safe to repeat)."""
    return UsageRecord.objects.filter(workspace_id=workspace_id, user_id=user_id).update(
        user_id=erased_user_id(workspace_id=workspace_id, user_id=user_id), client_request_id=""
    )


@transaction.atomic
def usage_erasure_finish(*, workspace_id: str, user_id: str) -> int:
    """An erasure's second pass: the records written since under the pseudonym, and the pass
    no longer owed once it is due (one run early leaves it to the sweep); how many were
    renamed. Safe to repeat."""
    renamed = usage_forget_user(workspace_id=workspace_id, user_id=user_id)
    UsageErasure.objects.filter(
        workspace_id=workspace_id, user_id=user_id, due_at__lte=timezone.now()
    ).delete()
    return renamed


def usage_erasures_sweep() -> int:
    """The second passes due and not done (their task lost), done now; how many (the sweep,
    memory.sweep_jobs, every ENGRAM_JOB_SWEEP_SECONDS)."""
    due = list(
        UsageErasure.objects.filter(due_at__lte=timezone.now())
        .order_by("due_at")
        .values_list("workspace_id", "user_id")[:ERASURES_BATCH]
    )
    for workspace_id, user_id in due:
        usage_erasure_finish(workspace_id=workspace_id, user_id=user_id)
    return len(due)


def _usage_forget_later(workspace_id: str, user_id: str) -> None:
    from completions.tasks import usage_forget_user_task

    try:
        usage_forget_user_task.apply_async(
            kwargs={"workspace_id": workspace_id, "user_id": user_id},
            countdown=ERASED_AGAIN_SECONDS,
        )
    except Exception as exc:  # Redis down: the sweep does the pass (UsageErasure)
        logger.warning("could not send the erasure's second pass (%s)", type(exc).__name__)
