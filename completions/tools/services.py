"""Writes for tools, executions and approvals.

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
import json
import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import Workspace
from completions.agents.models import Agent
from completions.tools import cache, policy
from completions.tools.models import Approval, Execution, Tool
from config.common import addresses, crypto
from config.common.closed import unknown_fields_check
from config.common.database import statements_bounded
from config.common.errors import Conflict, Gone, Invalid, NotFound
from config.common.ids import new_id
from config.common.rows import lock_existing

logger = logging.getLogger("engram.tools")

# Tools an agent may have: OpenAI's limit of a request's `tools` ("array too long").
MAX_TOOLS = 128
FIELDS = (
    "name",
    "description",
    "parameters",
    "type",
    "http",
    "builtin",
    "approval",
    "approval_ttl_seconds",
    "timeout_seconds",
)


def headers_of(tool: Tool) -> dict[str, str]:
    if not tool.http_headers_encrypted:
        return {}
    return json.loads(crypto.decrypt(tool.http_headers_encrypted))


def tool_stamp(tool: Tool) -> str:
    """What a call of `tool` does (which tool, its type and built-in, URL, method, headers and
    parameters), as a digest keyed by SECRET_KEY (the headers are secrets): a paused step
    keeps its tools' stamps, and approving it once one of them changed is refused
    (approval_current_check). Its description, approval policy and timeouts are not part."""
    what = {
        "id": tool.id,
        "kind": tool.kind,
        "builtin": tool.builtin,
        "url": tool.http_url,
        "method": tool.http_method,
        "headers": headers_of(tool),
        "parameters": tool.parameters,
    }
    payload = json.dumps(what, sort_keys=True)
    return salted_hmac("engram.tools.stamp", payload, algorithm="sha256").hexdigest()


def _apply(tool: Tool, values: dict[str, Any]) -> None:
    if "name" in values:
        tool.name = policy.name(values["name"])
    if "description" in values:
        if not isinstance(values["description"], str) or len(values["description"]) > 4000:
            raise Invalid(
                "description must be a string of 4,000 characters at most.", field="description"
            )
        tool.description = values["description"]
    if "parameters" in values:
        tool.parameters = policy.parameters(values["parameters"])
    if "type" in values:
        if values["type"] not in Tool.Kind.values:
            raise Invalid('type must be "http" or "builtin".', field="type")
        tool.kind = values["type"]
    if "http" in values and values["http"] is not None:
        checked = policy.http(values["http"])
        stored = headers_of(tool)
        # Stored values go only where they were given for: kept for another host, a PATCH of
        # the URL alone would have sent the write-only secrets to whoever the caller chose.
        moved = bool(stored) and addresses.origin(checked["url"]) != addresses.origin(tool.http_url)
        tool.http_url, tool.http_method = checked["url"], checked["method"]
        if "headers" in values["http"]:  # absent from a PATCH: the stored headers stay
            headers = _unmasked(checked["headers"], {} if moved else stored)
            tool.http_headers_encrypted = crypto.encrypt(json.dumps(headers)) if headers else ""
        elif moved:
            raise Invalid(
                "http.url names another host than the stored headers were given for: send "
                "http.headers again (their values, or {} for none).",
                field="http.headers",
            )
    if "builtin" in values and values["builtin"] is not None:
        tool.builtin = policy.builtin(values["builtin"])
    if "approval" in values:
        tool.approval = policy.approval(values["approval"])
    if "approval_ttl_seconds" in values:
        tool.approval_ttl_seconds = policy.approval_ttl(values["approval_ttl_seconds"])
    if "timeout_seconds" in values:
        tool.timeout_seconds = policy.timeout(values["timeout_seconds"])
    if tool.kind == Tool.Kind.HTTP:
        if not tool.http_url:
            raise Invalid('An "http" tool needs http.url.', field="http")
        # As a built-in's URL and headers go below: a tool is one or the other, and a read of
        # an HTTP tool made from a built-in (or sent one) showed "builtin": "remember".
        tool.builtin = ""
    if tool.kind == Tool.Kind.BUILTIN:
        if not tool.builtin:
            raise Invalid('A "builtin" tool needs builtin.', field="builtin")
        tool.http_url, tool.http_headers_encrypted = "", ""


def _unmasked(headers: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    """The headers to store: a value that is the mask a read shows keeps the stored value of
    that header (a read object written back loses no secret); a mask for a header with no
    stored value, or with the URL moved to another host, is refused (it would be sent as the
    literal mask)."""
    by_name = {name.lower(): value for name, value in stored.items()}
    out = {}
    for name, value in headers.items():
        if value == policy.HEADER_MASK:
            if name.lower() not in by_name:
                raise Invalid(
                    f"http.headers.{name} is the mask {policy.HEADER_MASK!r}, but this tool "
                    "has no stored value for it at this host: send its value.",
                    field="http.headers",
                )
            value = by_name[name.lower()]
        out[name] = value
    return out


def _unknown(values: dict[str, Any]) -> None:
    unknown_fields_check(values, FIELDS)


def _saved(tool: Tool) -> Tool:
    cache.invalidate(tool.workspace_id, tool.agent_id)
    try:
        with transaction.atomic():
            tool.save()
    except IntegrityError:
        raise Invalid(
            f"This agent already has a tool named '{tool.name}'.",
            field="name",
            code="tool_name_taken",
        ) from None
    return tool


def _memory_check(tool: Tool, agent: Agent) -> None:
    """A memory built-in only for an agent whose memory is on: off means nothing stored,
    nothing recalled (completions.agents.services refuses turning it off beside one)."""
    if (
        tool.kind == Tool.Kind.BUILTIN
        and tool.builtin in policy.MEMORY_BUILTINS
        and (agent.memory or {}).get("enabled", True) is False
    ):
        raise policy.memory_builtin_refused(tool.builtin)


def _locked_agent(*, workspace: Workspace, agent_id: str) -> Agent:
    """The tool's agent, locked: its memory policy cannot change while a tool is written."""
    agent = Agent.objects.select_for_update().filter(workspace=workspace, id=agent_id).first()
    if agent is None:
        raise NotFound(f"No agent '{agent_id}' in this workspace.", code="agent_not_found")
    return agent


def _room_check(agent: Agent) -> None:
    """Room for one more tool on `agent`: every call of it sends all its tools, and OpenAI
    refuses a request of more than MAX_TOOLS (400 "array too long"), so the 129th tool made
    every call of the agent fail, once it was stored."""
    if Tool.objects.filter(workspace_id=agent.workspace_id, agent=agent).count() >= MAX_TOOLS:
        raise Invalid(
            f"An agent has at most {MAX_TOOLS} tools (what a model call may be sent): "
            "delete one first.",
            code="too_many_tools",
        )


def tool_validate(
    *, values: dict[str, Any], agent: Agent | None = None, adding: bool = False
) -> None:
    """Check a tool's fields without saving (the admin's form shows the error on the page);
    `adding`: a new tool of `agent`, which needs room."""
    _unknown(values)
    tool = Tool(kind=values.get("type") or "")
    _apply(tool, values)
    if agent is not None:
        _memory_check(tool, agent)
        if adding:
            _room_check(agent)


@transaction.atomic
def tool_create(*, workspace: Workspace, agent_id: str, values: dict[str, Any]) -> Tool:
    _unknown(values)
    agent = _locked_agent(workspace=workspace, agent_id=agent_id)  # locked: one count at a time
    _room_check(agent)
    if "name" not in values or "type" not in values:
        raise Invalid(
            "A tool needs a name and a type.", field="name" if "name" not in values else "type"
        )
    # Left out, the schema is the one the model is sent, so the answer shows what it gets.
    tool = Tool(
        workspace=workspace,
        agent_id=agent_id,
        kind=values["type"],
        parameters=policy.parameters(None),
    )
    _apply(tool, values)
    _memory_check(tool, agent)
    return _saved(tool)


@transaction.atomic
def tool_update(*, workspace: Workspace, tool: Tool, values: dict[str, Any]) -> Tool:
    _unknown(values)
    agent = _locked_agent(workspace=workspace, agent_id=tool.agent_id)
    lock_existing(tool)  # or Tool.DoesNotExist: never saved back after a delete
    _apply(tool, values)
    _memory_check(tool, agent)
    tool.updated_at = timezone.now()
    return _saved(tool)


def tool_delete(*, workspace: Workspace, tool: Tool) -> None:
    Tool.objects.filter(workspace=workspace, id=tool.id).delete()
    cache.invalidate(tool.workspace_id, tool.agent_id)


# --- executions -----------------------------------------------------------------------------


def execution_create(
    *,
    workspace: Workspace,
    agent_id: str,
    user_id: str,
    request_id: str,
    model: str,
    route_model: str,
    stream: bool,
    body: dict,
    collection_ids: list[str],
    conversation_pk: str = "",
    session_pk: str = "",
    agent_version: int | None = None,
    request_digest: str = "",
) -> Execution:
    return Execution.objects.create(
        workspace=workspace,
        agent_id=agent_id,
        agent_version=agent_version,
        user_id=user_id,
        request_id=request_id,
        request_digest=request_digest,
        model=model,
        route_model=route_model,
        stream=stream,
        body=body,
        collection_ids=collection_ids,
        conversation_pk=conversation_pk,
        session_pk=session_pk,
        heartbeat_at=timezone.now(),
        owner=_new_owner(),
    )


class TakenOver(Conflict):
    """The run is no longer this process's: found lost (its heartbeat silent past LOST_AFTER)
    while it was alive, it was failed, and maybe taken over by its request sent again, which
    goes on with it. Its process stops where it stands: nothing written, no tool run."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(
            f"This request's tool run '{execution_id}' was taken from it: silent for "
            f"{int(LOST_AFTER.total_seconds())} seconds, it was taken as lost (failed, and "
            "maybe gone on in the same request sent again). Nothing more of it runs here, so "
            "no tool runs twice. Sent again, the request goes on with the run or gets its "
            f"answer; its steps: GET /v1/executions/{execution_id}.",
            code="run_taken_over",
        )


_SAVED_FIELDS = (
    "status",
    "messages",
    "steps",
    "pending",
    "usage",
    "error",
    "stream",
    "preface",
    "request_step",
)


def execution_save(*, execution: Execution) -> bool:
    """Store the run's state, if the run is still the one this process claimed (its `owner`
    token, compared in the update's WHERE: under the row's lock). TakenOver when another claim
    (or the sweep) took it meanwhile; False when its row is gone (its user was erased
    meanwhile: memory.services.users.user_delete), where save() raised and failed the run's
    answer."""
    execution.updated_at = execution.heartbeat_at = timezone.now()
    fields = {name: getattr(execution, name) for name in _SAVED_FIELDS}
    saved = Execution.objects.filter(id=execution.id, owner=execution.owner).update(
        **fields, updated_at=execution.updated_at, heartbeat_at=execution.heartbeat_at
    )
    if saved == 1:
        return True
    if Execution.objects.filter(id=execution.id).exists():
        raise TakenOver(execution.id)
    return False


# How often the process running a run says it is alive while a model or tool call is in flight
# (completions.tools.run.Run.beat), and how long without a word a `running` run is lost: four
# touches missed, so a busy database or event loop does not pass for a dead process (a live run
# declared lost is stopped at its next write, Execution.owner, its call in flight answered as
# interrupted by the retry that takes it over). Kept under a minute: the 409 a retry meets
# meanwhile says when to come back (`retry-after`), which the OpenAI SDKs wait out only up to
# 60 seconds.
HEARTBEAT_EVERY = dt.timedelta(seconds=10)
LOST_AFTER = 4 * HEARTBEAT_EVERY
# How long one touch may take, its wait for the row's lock included. A touch is a one-row
# UPDATE by primary key (14 ms with its bound set, 11 ms without, measured over 1,000 on this
# 2-core machine busy with other test runs); one still running after half a period is stalled
# (another transaction holds the row, the database is stuck): it gives up, and the next comes
# on time. Bounded only by the connection's limits, it waited ENGRAM_DB_LOCK_TIMEOUT (10 s, a
# period's worth of touches missed each time) or, with the bounds off (0), for ever: the
# beat stopped for good while the run lived on, and its pool thread stayed taken.
TOUCH_TIMEOUT = HEARTBEAT_EVERY / 2


def execution_heartbeat(*, execution_id: str, owner: str) -> bool:
    """The run's process (`owner`, its claim's token) is alive (Run.beat); False once the run
    is no longer `running` in its hands (it ended, or it was found lost and taken over): the
    touches stop, and never keep another owner's run looking alive. A touch held up past
    TOUCH_TIMEOUT raises (the database's error): the heartbeat tries again at its next beat."""
    with transaction.atomic():
        statements_bounded(TOUCH_TIMEOUT.total_seconds())
        touched = Execution.objects.filter(
            id=execution_id, status=Execution.Status.RUNNING, owner=owner
        ).update(heartbeat_at=timezone.now())
    return touched == 1


def execution_status_set(*, execution: Execution, status: str, error: str = "") -> None:
    """Only the run's status and error: what still stores when its messages cannot (a run
    that failed on storing them must not stay `running`). Not once the run is another's."""
    execution.status, execution.error = status, error[:2000]
    Execution.objects.filter(id=execution.id, owner=execution.owner).update(
        status=status, error=execution.error, updated_at=timezone.now()
    )


def _new_owner() -> str:
    return new_id("own")


def _claim(runs: QuerySet[Execution], *, now: dt.datetime) -> str:
    """The one claim of a run, for every door that starts it again (a resume's approval, a
    resume or a chat request sent again after it failed): the run `runs` selects, in the state
    the claim needs, set `running` with a fresh heartbeat and a new owner token by
    compare-and-set, so of two claimants at once one wins, and the process that ran it before
    can no longer write it (execution_save). The token, or "" when another got it first."""
    owner = _new_owner()
    won = runs.update(
        status=Execution.Status.RUNNING, error="", owner=owner, updated_at=now, heartbeat_at=now
    )
    return owner if won == 1 else ""


@transaction.atomic
def execution_pause(
    *,
    execution: Execution,
    message: dict,
    waiting: list[dict],
    ttl_seconds: int,
    stamps: dict[str, str],
    handback: dict | None = None,
) -> Approval:
    """Store the run's state (the assistant message whose calls wait, the stamps of the tools
    it calls: tool_stamp, and the client's own calls of that step, the run's answer once the
    agent's have run: completions.tools.run.Run.hand_back) and create the approval that
    resumes it."""
    execution.status = Execution.Status.WAITING
    execution.pending = {
        "message": message,
        "waiting": [c["id"] for c in waiting],
        "stamps": stamps,
        **({"handback": handback} if handback else {}),
    }
    execution_save(execution=execution)
    return Approval.objects.create(
        workspace_id=execution.workspace_id,
        execution=execution,
        user_id=execution.user_id,
        tool_calls=waiting,
        expires_at=Approval.expiry(ttl_seconds),
    )


# --- approvals ------------------------------------------------------------------------------

EXPIRED_ERROR = "approval expired"


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


def paused_step_index(execution: Execution) -> int | None:
    """Where the paused step's assistant message stands in the run's messages once a resume
    went on with its calls (they were started: a resume sent again never runs them again,
    completions.tools.run.Run.recover); None while they were not started."""
    message = execution.pending.get("message") or {}
    ids = [c.get("id") for c in message.get("tool_calls") or ()]
    messages = execution.messages
    return next(
        (
            i
            for i in range(len(messages) - 1, -1, -1)
            if messages[i].get("role") == "assistant"
            and [c.get("id") for c in messages[i].get("tool_calls") or ()] == ids
        ),
        None,
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
        and execution.error != EXPIRED_ERROR
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
            _claim(Execution.objects.filter(id=found.execution_id), now=now)
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
    """Claim a failed run back (_claim) for its request sent again: a chat request
    (completions.tools.entry), or a resume of its latest approval (approval_claim). Of two
    retries at once, one goes on with it; a run whose approval expired stays ended."""
    now = timezone.now()
    runs = Execution.objects.filter(id=execution.id, status=Execution.Status.FAILED)
    owner = _claim(runs.exclude(error=EXPIRED_ERROR), now=now)
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
        with transaction.atomic():
            won = Approval.objects.filter(id=approval_id, status=Approval.Status.PENDING).update(
                status=Approval.Status.EXPIRED, decided_at=now, reason="expired: rejected"
            )
            if not won:
                continue
            count += 1
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
            execution.error = EXPIRED_ERROR
            execution_save(execution=execution)
    if count:
        logger.info("tools: %d approval(s) expired, resolved as rejected", count)
    if ids is None:
        _interrupted(now)
    return count


# A run still RUNNING this long after its last write lost its process (a restart mid-run): no
# run lasts this long (tool and upstream timeouts bound every step). A run with a heartbeat is
# known lost sooner: silent for LOST_AFTER.
STALE_RUN = dt.timedelta(hours=1)
LOST_ERROR = "interrupted: its process was lost"


def _lost(now: dt.datetime) -> QuerySet[Execution]:
    """The runs still `running` whose process is lost: silent past LOST_AFTER, or not written
    for STALE_RUN (a run started before heartbeats were kept has none)."""
    return Execution.objects.filter(
        Q(heartbeat_at__lt=now - LOST_AFTER) | Q(updated_at__lt=now - STALE_RUN),
        status=Execution.Status.RUNNING,
    )


def execution_is_lost(*, execution: Execution, now: dt.datetime | None = None) -> bool:
    """Has the `running` run lost its process (as _lost judges it, on the row as read)?"""
    now = now or timezone.now()
    silent = execution.heartbeat_at is not None and execution.heartbeat_at < now - LOST_AFTER
    return execution.status == Execution.Status.RUNNING and (
        silent or execution.updated_at < now - STALE_RUN
    )


def _interrupted(now: dt.datetime) -> None:
    """The sweep: fail the runs that lost their process (_interrupt)."""
    stale = _lost(now)
    lost = sum(_interrupt(stale, i) for i in list(stale.values_list("id", flat=True)[:500]))
    if lost:
        logger.warning("tools: %d run(s) had lost their process", lost)


def execution_lost_fail(*, execution: Execution) -> bool:
    """Fail the run if it is still lost, as the sweep does (_interrupt), for its request sent
    again before the sweep came (completions.tools.entry.sent_again). False when it is not (it
    went on, ended, or another retry of it got there first): the row decides, under its lock."""
    return _interrupt(_lost(timezone.now()), execution.id)


def _interrupt(stale: QuerySet[Execution], execution_id: str) -> bool:
    """Fail a run that lost its process, and store in its conversation what it ran (the tool
    calls and results the door would have stored, a call whose outcome was never recorded
    answered as interrupted), so the user's next turn knows what the tools did. `stale` is
    checked again under the row's lock: of two callers (the sweep, a retry) one fails it."""
    with transaction.atomic():
        execution = stale.select_for_update().filter(id=execution_id).first()
        if execution is None:  # it went on meanwhile
            return False
        unstored = _unstored(execution)
        execution.status = Execution.Status.FAILED
        execution.error = LOST_ERROR
        # A resume sent again stores only what follows (completions.tools.run.Run.recover).
        execution.pending["stored"] = len(execution.messages)
        execution_save(execution=execution)
        # Taken from its process, which may be alive all the same (a stalled heartbeat): its
        # next write finds the run no longer its own and stops (execution_save), so it neither
        # writes over what follows nor runs a tool the run goes on without.
        execution.owner = ""
        Execution.objects.filter(id=execution.id).update(owner="")
        try:
            with transaction.atomic():  # its own savepoint: a failure here keeps the status
                execution_messages_store(
                    execution=execution,
                    messages=unstored,
                    extraction=False,  # as a run that failed at the door
                    resumed=bool(execution.pending.get("message")),
                )
        except Exception:  # history lost, the run failed all the same
            logger.exception("storing a lost run's messages failed")
    return True


def _unstored(execution: Execution) -> list[dict]:
    """What a run that lost its process ran that its conversation does not hold: the messages
    after `pending["stored"]` (set when the run starts, and by a resume that failed) or after
    the paused step a resume went on with."""
    from completions.tools.run import interrupted

    if execution.pending.get("message"):
        at = paused_step_index(execution)
        if at is None:  # the paused calls were not started: nothing ran
            return []
        start = max(at + 1, execution.pending.get("stored", 0))
    else:
        # A run started before `stored` was kept: nothing known to store.
        at = start = execution.pending.get("stored", len(execution.messages))
    interrupted(execution, since=at)
    return execution.messages[start:]


def execution_messages_store(
    *, execution: Execution, messages: list[dict], extraction: bool, resumed: bool = False
) -> None:
    """Store a run's tool calls, their results and (on resume) its answer in the turn's
    conversation, so they are history and feed memory extraction like any other turn.

    A resume's messages also extend the fingerprint of a conversation found by the history its
    client resent (memory.turn.conversation), as finish_turn does for a turn's answer: the
    client's next turn, resending the transcript, lands in the same conversation."""
    from memory.models import Conversation, Message, Session
    from memory.services.conversations import conversation_fingerprint_set, messages_append
    from memory.services.processing import extraction_enqueue, summary_enqueue
    from memory.turn.conversation import HEAD_ROLES, fingerprint

    if not messages or not execution.conversation_pk:
        return
    conversation = Conversation.objects.filter(
        workspace_id=execution.workspace_id, pk=execution.conversation_pk
    ).first()
    if conversation is None:  # deleted meanwhile (the user's data was erased)
        return
    session = (
        Session.objects.filter(pk=execution.session_pk).first() if execution.session_pk else None
    )
    with transaction.atomic():
        if resumed and conversation.fingerprint:
            last = (
                Message.objects.filter(conversation=conversation)
                .exclude(role__in=HEAD_ROLES)
                .order_by("-created_at", "-id")
                .values_list("raw", flat=True)
                .first()
            ) or {}
            # Only while the paused answer (or what a failed try of the resume stored after
            # it: this run's tool results) is still the conversation's last message: had a
            # new turn come meanwhile, the fingerprint is that turn's.
            waited = {c.get("id") for c in last.get("tool_calls") or () if isinstance(c, dict)}
            results = {m.get("tool_call_id") for m in execution.messages if m.get("role") == "tool"}
            if messages[0].get("tool_call_id") in waited or (
                last.get("role") == "tool" and last.get("tool_call_id") in results
            ):
                conversation_fingerprint_set(
                    conversation=conversation,
                    fingerprint=fingerprint(messages, conversation.fingerprint),
                )
        stored = messages_append(
            workspace=conversation.workspace,
            conversation=conversation,
            session=session,
            messages=[_storable(m) for m in messages],
            at=_in_its_turn(conversation=conversation, execution=execution, count=len(messages)),
        )
        if extraction:
            extraction_enqueue(
                workspace=conversation.workspace, conversation=conversation, upto=stored[-1].id
            )
        summary_enqueue(workspace=conversation.workspace, conversation=conversation)


def _in_its_turn(*, conversation, execution: Execution, count: int) -> dt.datetime | None:
    """When a run's `count` messages stored late were said: right after the last of the run's
    own the conversation holds (its paused step, results a failed resume stored), before the
    turn that came while it waited for its approval. The history is read in (created_at, id)
    order and leaves out a call not followed by its results: stored after that later turn, a
    decided call's result was left out with its call. None (stored now): no turn came since,
    or none of the run's messages is stored yet."""
    from memory.models import Message
    from memory.text import tool_call_ids
    from memory.turn.conversation import HEAD_ROLES

    calls = {c for m in execution.messages for c in tool_call_ids(m) if isinstance(c, str)}
    if not calls:
        return None
    rows = list(
        Message.objects.filter(conversation=conversation, created_at__gte=execution.created_at)
        .exclude(role__in=HEAD_ROLES)
        .order_by("created_at", "id")
        .values_list("created_at", "role", "raw")
    )
    own = [
        i
        for i, (_, role, raw) in enumerate(rows)
        if isinstance(raw, dict)
        and (
            (role == "tool" and str(raw.get("tool_call_id")) in calls)
            or (role == "assistant" and not calls.isdisjoint(map(str, tool_call_ids(raw))))
        )
    ]
    if not own:
        return None
    later = next((i for i in range(own[-1] + 1, len(rows)) if rows[i][1] == "user"), None)
    if later is None:
        return None
    step = dt.timedelta(microseconds=1)
    start = rows[later - 1][0] + step
    # messages_append spaces them a microsecond apart: all must fit before the later turn.
    return start if start + step * (count - 1) < rows[later][0] else None


def _storable(message: dict) -> dict:
    from memory.text import kept_reasoning

    keep = ("role", "content", "tool_calls", "tool_call_id", "name")
    return {k: message[k] for k in keep if message.get(k) is not None} | {
        "content": message.get("content"),
        **kept_reasoning(message),
    }
