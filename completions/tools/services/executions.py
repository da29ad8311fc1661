"""Writes for an agent's runs (executions): created, saved only by the process that owns
them, kept alive by a heartbeat, paused on an approval, claimed back by compare-and-set, found
lost and failed, and their messages stored into the conversation in their turn."""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import Workspace
from completions.tools.models import Approval, Execution
from config.common.database import statements_bounded
from config.common.errors import Conflict
from config.common.ids import new_id

logger = logging.getLogger("engram.tools")


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
    agent_tools: list[str] | None = None,
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
        agent_tools=agent_tools or [],
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


def runs_claim(runs: QuerySet[Execution], *, now: dt.datetime) -> str:
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


def lost_runs_fail(now: dt.datetime) -> None:
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
    # Imported here: completions.tools.steps needs the executor, which loads this package
    # (its headers_of, in completions.tools.services.tools) as it loads.
    from completions.tools.steps import interrupted

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
