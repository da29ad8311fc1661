"""Reads for tools and executions: always scoped to a workspace."""

from __future__ import annotations

import datetime as dt

from django.db.models import Case, F, Prefetch, QuerySet, Value, When
from django.utils import timezone

from accounts.models import Workspace
from completions.agents.models import Agent
from completions.tools.models import ENDED_ERRORS, Approval, Execution, Tool
from completions.tools.policy import MEMORY_BUILTINS
from config.common.errors import NotFound


def tool_list(*, workspace: Workspace | str, agent_id: str) -> QuerySet[Tool]:
    """Raises Agent.DoesNotExist for an unknown or foreign agent."""
    Agent.objects.filter(workspace=workspace).only("id").get(id=agent_id)
    return Tool.objects.filter(workspace=workspace, agent_id=agent_id).order_by("created_at", "id")


def tool_get(*, workspace: Workspace | str, agent_id: str, tool_id: str) -> Tool:
    return Tool.objects.get(workspace=workspace, agent_id=agent_id, id=tool_id)


def agent_tools(*, workspace: Workspace | str, agent_id: str) -> list[Tool]:
    """The tools a call of the agent offers the model (none for an unknown agent)."""
    return list(Tool.objects.filter(workspace=workspace, agent_id=agent_id).order_by("name"))


def memory_tool_names(*, workspace: Workspace | str, agent_id: str) -> list[str]:
    """The agent's tools that are memory built-ins (policy.MEMORY_BUILTINS)."""
    return list(
        Tool.objects.filter(
            workspace=workspace,
            agent_id=agent_id,
            kind=Tool.Kind.BUILTIN,
            builtin__in=MEMORY_BUILTINS,
        )
        .order_by("name")
        .values_list("name", flat=True)
    )


def execution_get(*, workspace: Workspace | str, execution_id: str) -> Execution:
    return Execution.objects.prefetch_related(approvals_as_they_read()).get(
        workspace=workspace, id=execution_id
    )


def approvals_as_they_read() -> Prefetch:
    """A run's approvals, each with its `current_status` (approval_status), for the run's
    body: a pending one past its expiry reads expired there too, as in the approvals' list."""
    return Prefetch(
        "approvals", queryset=Approval.objects.annotate(current_status=approval_status())
    )


def approval_status() -> Case:
    """An approval's status as it reads now: a pending one past its expiry, which the sweep
    has not resolved yet, is expired (no resume can approve it: services.approval_claim).
    The one place that rule is written for reads: a list filters on it and a body shows it
    (annotated as `current_status`)."""
    return Case(
        When(
            status=Approval.Status.PENDING,
            expires_at__lte=Value(timezone.now()),
            then=Value(Approval.Status.EXPIRED.value),
        ),
        default=F("status"),
    )


def approval_list(
    *,
    workspace: Workspace | str,
    status: str | None = None,
    user_id: str | None = None,
    agent_id: str | None = None,
) -> QuerySet[Approval]:
    """The workspace's approvals (a human's queue: `status` "pending"), with their runs, each
    with its `current_status` (approval_status): a pending one past its expiry is listed as
    expired, not as waiting."""
    approvals = (
        Approval.objects.filter(workspace=workspace)
        .select_related("execution")
        .annotate(current_status=approval_status())
    )
    if status is not None:
        approvals = approvals.filter(current_status=status)
    if user_id is not None:
        approvals = approvals.filter(user_id=user_id)
    if agent_id is not None:
        approvals = approvals.filter(execution__agent_id=agent_id)
    return approvals


def execution_list(
    *,
    workspace: Workspace | str,
    status: str | None = None,
    user_id: str | None = None,
    agent_id: str | None = None,
) -> QuerySet[Execution]:
    """The workspace's agent runs, with their approvals (prefetched: a page of runs reads
    them in one query, as a user's export does)."""
    runs = Execution.objects.filter(workspace=workspace).prefetch_related(approvals_as_they_read())
    if status is not None:
        runs = runs.filter(status=status)
    if user_id is not None:
        runs = runs.filter(user_id=user_id)
    if agent_id is not None:
        runs = runs.filter(agent_id=agent_id)
    return runs


def approval_get(
    *, workspace: Workspace, approval_id: str, user_id: str | None, end_user: str | None = None
) -> Approval:
    """The approval a resume decides, with its run. NotFound for an unknown id, another
    workspace's, or another end user's (`user_id`, the caller's). An end-user token's caller
    (`end_user`, accounts.endusers.scope) reaches only approvals of its own user: one made
    with no end user is the workspace key's."""
    found = (
        Approval.objects.select_related("execution")
        .filter(workspace=workspace, id=approval_id)
        .first()
    )
    if found is None or (
        found.user_id != end_user
        if end_user is not None  # a token: its own user's only, never the key's
        else found.user_id and found.user_id != user_id
    ):
        raise NotFound(
            f"No approval '{approval_id}' in this workspace.",
            field="approval_id",
            code="approval_not_found",
        )
    return found


# How long after a run started the same chat request sent again is its retry: the sweep fails
# a run that lost its process after services.STALE_RUN, and a retry as long after that still
# finds it. Later, the same request is a new one.
RETRY_WINDOW = dt.timedelta(hours=2)


def execution_of_request(
    *, workspace: Workspace | str, user_id: str, agent_id: str, request_digest: str
) -> Execution | None:
    """The newest run this user's same chat request (Execution.request_digest) started within
    RETRY_WINDOW, that never paused (a paused run goes on by /v1/chat/resume) and has not
    answered: still running (or its process was lost), or failed after its tools ran."""
    run = (
        Execution.objects.filter(
            workspace=workspace,
            user_id=user_id,
            request_digest=request_digest,
            agent_id=agent_id,
            created_at__gte=timezone.now() - RETRY_WINDOW,
        )
        .order_by("-created_at")
        .first()
    )
    if run is None or run.pending.get("message") or run.error in ENDED_ERRORS:
        return None
    if run.status == Execution.Status.RUNNING:
        return run
    ran = any(step.get("type") == "tool" for step in run.steps)
    return run if run.status == Execution.Status.FAILED and ran else None


# How long after a run answered an SDK's retry of its request gets that answer again
# (execution_answered): the SDKs retry after a timeout (10 minutes by default), twice, as
# memory.turn.conversation.RETRY_WINDOW counts them. Later, or without the SDK's retry count,
# the same request is a regenerate: a new run.
REPLAY_WINDOW = dt.timedelta(minutes=30)


def execution_answered(
    *, workspace: Workspace | str, user_id: str, agent_id: str, request_digest: str
) -> Execution | None:
    """The newest run of this user's same chat request if it answered (completed) within
    REPLAY_WINDOW and never paused: a paused request's answer was its approval, and what its
    resume answered is the resume's."""
    now = timezone.now()
    run = (
        Execution.objects.filter(
            workspace=workspace,
            user_id=user_id,
            request_digest=request_digest,
            agent_id=agent_id,
            created_at__gte=now - RETRY_WINDOW,
        )
        .order_by("-created_at")
        .first()
    )
    if run is None or run.status != Execution.Status.COMPLETED or not run.messages:
        return None
    if run.updated_at < now - REPLAY_WINDOW or run.messages[-1].get("role") != "assistant":
        return None
    return None if any(s.get("type") == "approval" for s in run.steps) else run


def conversation_external_id(*, workspace: Workspace | str, conversation_pk: str) -> str | None:
    """The id a run's conversation is named by (None: deleted meanwhile)."""
    from memory.models import Conversation

    return (
        Conversation.objects.filter(workspace=workspace, pk=conversation_pk)
        .values_list("external_id", flat=True)
        .first()
    )


def execution_resumed(*, approval: Approval, approve: bool) -> Execution | None:
    """The run a resume deciding `approval` so went on with, when that resume is the run's
    last word: the approval decided this way and still its latest (the run did not pause again),
    the run still running or answered within REPLAY_WINDOW. A resume sent again then is the
    same request (an SDK's retry after a timeout): 409 while it runs, its answer once it has
    (completions.tools.entry.resume). None otherwise (the approval is used: 410)."""
    decided = Approval.Status.APPROVED if approve else Approval.Status.REJECTED
    found = Approval.objects.filter(id=approval.id).values_list("status", flat=True).first()
    latest = (
        Approval.objects.filter(execution_id=approval.execution_id)
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
        .first()
    )
    if found != decided or latest != approval.id:
        return None
    run = Execution.objects.filter(id=approval.execution_id).first()
    if run is None or run.status == Execution.Status.RUNNING:
        return run
    answered = (
        run.status == Execution.Status.COMPLETED
        and run.messages
        and run.messages[-1].get("role") == "assistant"
        and run.updated_at >= timezone.now() - REPLAY_WINDOW
    )
    return run if answered else None
