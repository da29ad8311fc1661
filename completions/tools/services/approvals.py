"""Writes for approvals.

An approval is used once: `approval_claim` moves it from PENDING by compare-and-set
(`filter(status=PENDING, expires_at__gt=now).update(...) == 1`, as the extraction jobs claim
theirs), so of two concurrent resumes exactly one runs the tools, and a restart in between
cannot run them again. `approvals_expire` resolves what nobody decided in time as rejected.

A resume whose run then failed (the upstream's error, a broken stream, a lost process) can be
sent again: the same decision on the run's latest approval claims the FAILED run back by
compare-and-set on its status, and the run goes on from its stored state (the tools' recorded
results; a call whose outcome was not recorded is never run again). Once the run answered or
paused on a new approval, the old approval is 410 again.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts.models import Workspace
from completions.tools.models import (
    AGENT_DELETED_ERROR,
    ENDED_ERRORS,
    EXPIRED_ERROR,
    Approval,
    Execution,
    Tool,
)
from completions.tools.services.executions import (
    execution_save,
    lost_runs_fail,
    paused_step_index,
    runs_claim,
)
from completions.tools.services.tools import tool_stamp
from config.common.errors import Gone

logger = logging.getLogger("engram.tools")


@dataclass
class Claimed:
    approval: Approval
    execution: Execution
    retry: bool = False  # a resume sent again after its run failed: it goes on from its state


def _gone(approval: Approval) -> Gone:
    if approval.status == Approval.Status.EXPIRED:
        return Gone(
            f"The approval '{approval.id}' expired.", field="approval_id", code="approval_expired"
        )
    return Gone(
        f"The approval '{approval.id}' was already {approval.status}.",
        field="approval_id",
        code="approval_used",
    )


def _runs_when_claimed(approval: Approval) -> bool:
    """Would a resume approving `approval` run its paused calls now? A pending approval's,
    until it expires; an approved one's whose run failed before they were started (its
    resume sent again runs them then, approval_claim). A used or expired approval is refused
    by approval_claim in its own words."""
    if approval.status == Approval.Status.PENDING:
        return approval.expires_at > timezone.now()
    execution = approval.execution
    waiting = [c.get("id") for c in approval.tool_calls if isinstance(c, dict)]
    return (
        approval.status == Approval.Status.APPROVED
        and execution.status == Execution.Status.FAILED
        and execution.error not in ENDED_ERRORS
        and execution.pending.get("waiting") == waiting  # still this approval's pause
        and paused_step_index(execution) is None
    )


def approval_current_check(*, approval: Approval, tools: tuple[Tool, ...] | list[Tool]) -> None:
    """Gone (`approval_stale`) when a tool of the paused step was changed (or replaced) since
    it paused and approving would run its calls now: a human approved calls of the tool as it
    was, so they never run against another URL or other headers — neither on the first
    resume nor on one sent again after a failure that came before they started. A deleted
    tool is not stale: its call fails as no longer existing (completions.tools.entry). A
    resume sent again after the calls started goes on without running them again, and is not
    checked. A run paused before stamps were kept is not checked."""
    if not _runs_when_claimed(approval):
        return
    stamps = approval.execution.pending.get("stamps") or {}
    by_name = {t.name: t for t in tools}
    for name, stamp in sorted(stamps.items()):
        tool = by_name.get(name)
        if tool is not None and tool_stamp(tool) != stamp:
            then = (
                "Reject it, or send the request again."
                if approval.status == Approval.Status.PENDING
                else "Send the request again."
            )
            raise Gone(
                f"The approval '{approval.id}' is stale: the tool '{name}' was changed after "
                f"its call paused for approval. {then}",
                field="approval_id",
                code="approval_stale",
            )


def approval_claim(
    *, workspace: Workspace, approval: Approval, approve: bool, reason: str
) -> Claimed:
    """Decide a pending approval once (`approval` as completions.tools.selectors.approval_get
    found it, for this workspace and end user). Gone when it was decided or expired (an
    expired one is recorded so)."""
    found = approval
    now = timezone.now()
    status = Approval.Status.APPROVED if approve else Approval.Status.REJECTED
    with transaction.atomic():
        claimed = Approval.objects.filter(
            workspace=workspace, id=found.id, status=Approval.Status.PENDING, expires_at__gt=now
        ).update(status=status, reason=reason[:2000], decided_at=now)
        if claimed == 1:
            # RUNNING in the same commit: a resume sent again meanwhile sees a run in progress.
            runs_claim(Execution.objects.filter(id=found.execution_id), now=now)
    if claimed != 1:
        approvals_expire(ids=[found.id])
        found.refresh_from_db()
        if found.status == status and _latest(found):
            execution = Execution.objects.get(id=found.execution_id)
            if execution_reclaim(execution=execution):
                return Claimed(found, execution, retry=True)
        raise _gone(found)
    found.refresh_from_db()
    execution = Execution.objects.get(id=found.execution_id)
    return Claimed(found, execution)


def _latest(approval: Approval) -> bool:
    """Is `approval` its run's latest (the run did not move on to a new approval)?"""
    latest = (
        Approval.objects.filter(execution_id=approval.execution_id)
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
        .first()
    )
    return latest == approval.id


def execution_reclaim(*, execution: Execution) -> bool:
    """Claim a failed run back (runs_claim) for its request sent again: a chat request
    (completions.tools.entry), or a resume of its latest approval (approval_claim). Of two
    retries at once, one goes on with it; a run whose approval expired stays ended."""
    now = timezone.now()
    runs = Execution.objects.filter(id=execution.id, status=Execution.Status.FAILED)
    owner = runs_claim(runs.exclude(error__in=ENDED_ERRORS), now=now)
    if owner:
        execution.status, execution.error, execution.owner = Execution.Status.RUNNING, "", owner
        execution.updated_at = execution.heartbeat_at = now
    return bool(owner)


def approvals_expire(*, ids: list[str] | None = None) -> int:
    """Resolve pending approvals past their expiry as rejected (EXPIRED), and record it on the
    execution's steps; the run stays ended (nobody waits on it)."""
    now = timezone.now()
    due = Approval.objects.filter(status=Approval.Status.PENDING, expires_at__lte=now)
    if ids is not None:
        due = due.filter(id__in=ids)
    count = 0
    for approval_id, execution_id in list(due.values_list("id", "execution_id")[:500]):
        count += _approval_end(
            approval_id, execution_id, now=now, reason="expired: rejected", error=EXPIRED_ERROR
        )
    if count:
        logger.info("tools: %d approval(s) expired, resolved as rejected", count)
    if ids is None:
        lost_runs_fail(now)
    return count


def agent_runs_end(*, workspace: Workspace, agent_id: str) -> int:
    """End the runs of a deleted agent that wait on an approval, in the deletion's
    transaction: each pending approval EXPIRED ("agent deleted: rejected"), its run FAILED.
    Left pending, they were listed as waiting for a human until they expired, though a
    resume of them is refused (404 agent_not_found, completions.tools.entry)."""
    now = timezone.now()
    pending = Approval.objects.filter(
        workspace=workspace, execution__agent_id=agent_id, status=Approval.Status.PENDING
    )
    return sum(
        _approval_end(
            approval_id,
            execution_id,
            now=now,
            reason="agent deleted: rejected",
            error=AGENT_DELETED_ERROR,
        )
        for approval_id, execution_id in list(pending.values_list("id", "execution_id"))
    )


@transaction.atomic
def _approval_end(
    approval_id: str, execution_id: str, *, now: dt.datetime, reason: str, error: str
) -> int:
    """Resolve a pending approval nobody will decide as rejected (EXPIRED, with `reason`) and
    end its run FAILED with `error`, recorded on its steps; 0 when it was decided meanwhile."""
    won = Approval.objects.filter(id=approval_id, status=Approval.Status.PENDING).update(
        status=Approval.Status.EXPIRED, decided_at=now, reason=reason
    )
    if not won:
        return 0
    execution = Execution.objects.select_for_update().get(id=execution_id)
    execution.steps = [
        *execution.steps,
        {
            "type": "approval",
            "approval_id": approval_id,
            "decision": "reject",
            "status": "expired",
            "at": int(now.timestamp()),
        },
    ]
    execution.status = Execution.Status.FAILED
    execution.error = error
    execution_save(execution=execution)
    return 1


# A run still RUNNING this long after its last write lost its process (a restart mid-run): no
# run lasts this long (tool and upstream timeouts bound every step). A run with a heartbeat is
# known lost sooner: silent for LOST_AFTER.
