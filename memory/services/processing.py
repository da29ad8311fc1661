"""Background work per conversation: jobs over message ranges, claimed atomically.

A job covers the messages with after_message_id < id <= upto_message_id (ids sort by creation).
Its row exists before the task is sent (on commit), so `processing.pending` never misses work,
and the row, not the broker, is the source of truth: a send lost with Redis, or a worker killed
mid-job, is picked up by the sweep (memory.services.sweep).

A claimed job holds a lease: its worker renews `updated_at` every third of
ENGRAM_JOB_LEASE_SECONDS; a RUNNING job whose lease lapsed lost its worker and may be claimed
again. `attempts` numbers the claims and fences the writes of a run that lost its lease (the
run's writes on its claims: memory.services.fencing).

A run that claims an extraction job also claims the other extraction jobs of the conversation
that are claimable then (jobs_claim): a backlog of turns is worked off in one run — one
embedding run, one load of the user's memories, one commit — rather than job by job. With the
offline extractor the run takes the workspace's other conversations' jobs too: one claim, one
embedding run, one write of the messages, one commit and one finish for many users' turns.
Each job keeps its own claim, lease and fencing token. A turn sends its extraction task only
while no task of its unit (extraction_unit: what one run claims) waits (config.coalesce): behind
a backlog the others' own tasks found their jobs taken, each a no-op costing the worker ~2 ms.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypedDict

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.utils import timezone

from accounts.models import Workspace
from config.common import rows
from memory.models import Conversation, Message, ProcessingJob

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

logger = logging.getLogger("engram.memory")

Kind = ProcessingJob.Kind
Status = ProcessingJob.Status


def lease() -> dt.timedelta:
    """How long a RUNNING job's worker may go without renewing it before the job is re-claimable."""
    return dt.timedelta(seconds=settings.ENGRAM_JOB_LEASE_SECONDS)


def extraction_unit(*, workspace_id: str, conversation_id: str) -> str:
    """What one extraction run claims whole, named for its task's message and its pending mark
    (config.coalesce): with the offline extractor (the setting) the workspace's queued jobs,
    otherwise the conversation's. By the setting alone, which the web and the worker read
    alike: in "auto" a run may still claim the workspace (no LLM routed), a wider claim than
    the unit, which is safe; a unit wider than the claim would not be."""
    scope, _ = extraction_unit_scope()
    return f"{scope}:{workspace_id if scope == 'w' else conversation_id}"


# A unit's letter (extraction_unit) and the jobs' column that names it: read to make a unit and
# to read one back (_unit_first), which may have been made under another setting.
_UNIT_COLUMNS = {"w": "workspace_id", "c": "conversation_id"}


def extraction_unit_scope() -> tuple[str, str]:
    """The units' letter and the jobs' column that names them (extraction_unit)."""
    scope = "w" if settings.ENGRAM_MEMORY_EXTRACTION == "offline" else "c"
    return scope, _UNIT_COLUMNS[scope]


def job_send(*, job_id: str, kind: str, unit: str = "", force: bool = False) -> None:
    """Send the job's task now; if Redis is down, the sweep sends it. An extraction job with
    its `unit` is sent only if no task for its unit waits (config.coalesce; `force`: all the
    same, as the sweep does)."""
    from config.celery import send
    from config.coalesce import send_once
    from memory import tasks

    then = "the sweep sends it"
    if kind == Kind.EXTRACT and unit:
        send_once(tasks.extract, job_id, unit, unit=unit, then=then, force=force)
        return
    send(tasks.extract if kind == Kind.EXTRACT else tasks.summarize, job_id, then=then)


def _create(
    *, workspace: Workspace, conversation: Conversation, kind: str, after: str, upto: str
) -> ProcessingJob | None:
    # Inserted without get_or_create's SELECT first: the callers looked for an existing job's
    # range a statement ago, so the insert almost always succeeds; the unique range decides a
    # race (or a summary job that failed at this range), as it did for get_or_create. One
    # statement less in every turn's finish (-0.8 ms of the web process's CPU, bench_turn_cpu).
    job = ProcessingJob(
        workspace=workspace,
        conversation=conversation,
        kind=kind,
        upto_message_id=upto,
        after_message_id=after,
    )
    if not _insert_unless_taken(job):
        return None
    unit = (
        extraction_unit(workspace_id=workspace.id, conversation_id=conversation.id)
        if kind == Kind.EXTRACT
        else ""
    )
    transaction.on_commit(lambda: job_send(job_id=job.id, kind=kind, unit=unit))
    return job


def _insert_unless_taken(job: ProcessingJob) -> bool:
    """Insert the job unless its range is already taken (job_unique_per_range): one statement.
    The ORM's create inside a savepoint, for the IntegrityError of a taken range, cost every
    turn's finish two more statements (SAVEPOINT, RELEASE) and the insert's SQL built again."""
    inserted = bool(
        rows.insert(
            [job], then="ON CONFLICT ON CONSTRAINT job_unique_per_range DO NOTHING RETURNING 1"
        )
    )
    job._state.adding = not inserted
    return inserted


# Inside a caller's transaction (a turn's finish) no savepoint of its own: an error fails the
# caller's transaction either way, and a turn saves two statements.
@transaction.atomic(savepoint=False)
def extraction_enqueue(
    *,
    workspace: Workspace,
    conversation: Conversation,
    upto: str | None = None,
    covered: str | None = None,
) -> ProcessingJob | None:
    """A job for the messages no extraction job covers yet (none when there are none).

    `upto`: the newest message id, when the caller just stored it (saves looking it up).
    `covered`: the newest message id the conversation's extraction jobs cover ("" for none),
    when the caller read it earlier in its transaction (a turn's finish: EXTRACTION_COVERED).
    """
    last = (
        upto or Message.objects.filter(conversation=conversation).aggregate(last=Max("id"))["last"]
    )
    if covered is None:
        covered = (
            ProcessingJob.objects.filter(conversation=conversation, kind=Kind.EXTRACT).aggregate(
                upto=Max("upto_message_id")
            )["upto"]
            or ""
        )
    if last is None or last <= covered:
        return None
    return _create(
        workspace=workspace, conversation=conversation, kind=Kind.EXTRACT, after=covered, upto=last
    )


@transaction.atomic(savepoint=False)  # as extraction_enqueue
def summary_enqueue(
    *, workspace: Workspace, conversation: Conversation, tokens: int | None = None
) -> ProcessingJob | None:
    """Fold older messages into the rolling summary once enough have piled up past it.

    `tokens`: the tokens of the conversation's messages past its summary, when the caller
    counted them in its transaction (a turn's finish: UNSUMMARIZED_TOKENS)."""
    # The tokens first: most turns stop there, below the trigger, in one query (the check for a
    # summary in flight came first and cost every turn a second one).
    if tokens is None:
        tokens = (
            Message.objects.filter(
                conversation=conversation, id__gt=conversation.summary_upto
            ).aggregate(tokens=Sum("token_count"))["tokens"]
            or 0
        )
    if tokens < settings.ENGRAM_SUMMARY_TRIGGER_TOKENS:
        return None
    if ProcessingJob.objects.filter(
        conversation=conversation, kind=Kind.SUMMARIZE, status__in=[Status.PENDING, Status.RUNNING]
    ).exists():
        return None
    # Keep the most recent turns out of the summary: they travel verbatim as history.
    keep = settings.ENGRAM_SUMMARY_KEEP_MESSAGES
    upto = (
        Message.objects.filter(conversation=conversation, id__gt=conversation.summary_upto)
        .order_by("-id")
        .values_list("id", flat=True)[keep : keep + 1]
        .first()
    )
    if upto is None:
        return None
    return _create(
        workspace=workspace,
        conversation=conversation,
        kind=Kind.SUMMARIZE,
        after=conversation.summary_upto,
        upto=upto,
    )


# What extraction_enqueue and summary_enqueue look up, as columns of a caller's statement about
# the conversation (memory_conversation in its FROM): a turn's finish reads them with the
# conversation it reads again, two statements fewer a turn.
EXTRACTION_COVERED = (
    "(SELECT MAX(j.upto_message_id) FROM memory_processingjob j"
    f" WHERE j.conversation_id = memory_conversation.id AND j.kind = '{Kind.EXTRACT.value}')"
)
UNSUMMARIZED_TOKENS = (
    "(SELECT SUM(m.token_count) FROM memory_message m"
    " WHERE m.conversation_id = memory_conversation.id AND m.id > memory_conversation.summary_upto)"
)


def _claimable(now: dt.datetime) -> Q:
    # The IN first: the unfinished jobs' partial indexes are seen to apply at a glance.
    return Q(status__in=[Status.PENDING, Status.RUNNING]) & (
        Q(status=Status.PENDING) | Q(status=Status.RUNNING, updated_at__lt=now - lease())
    )


def takeable(*, job_id: str, now: dt.datetime) -> QuerySet[ProcessingJob]:
    """The job, if it is claimable now: what a claim's compare-and-set updates."""
    return ProcessingJob.objects.filter(_claimable(now), id=job_id)


def _take(*, job_id: str, now: dt.datetime) -> bool:
    claimed = takeable(job_id=job_id, now=now).update(
        status=Status.RUNNING, attempts=F("attempts") + 1, updated_at=now
    )
    return claimed == 1


class Queued(TypedDict):
    queued: bool
    queued_around: bool


def taken_with_queue(
    *, job_id: str, now: dt.datetime, around: bool
) -> QuerySet[WithAnnotations[ProcessingJob, Queued]]:
    """The job just taken, with its conversation and workspace, and whether anything else of
    its kind is queued in its conversation (`queued`) and, with `around`, in its workspace
    (`queued_around`): one query (bench/probe_claim_plans.py times it)."""

    def others(scope: str) -> QuerySet[ProcessingJob]:
        return ProcessingJob.objects.filter(
            _claimable(now), **{scope: OuterRef(scope)}, kind=OuterRef("kind")
        ).exclude(id=OuterRef("id"))

    # The workspace's check asks for its first queued job in job_unfinished_by_workspace's
    # order, so that index answers it: as an EXISTS, PostgreSQL walked the unfinished jobs by
    # age and, in a workspace with nothing else queued, filtered another workspace's whole
    # backlog first (1.37 ms with 5,000 queued there; bench/probe_claim_plans.py).
    first_around = others("workspace_id").order_by("upto_message_id").values("id")[:1]
    return (
        ProcessingJob.objects.select_related("conversation", "workspace")
        .alias(first_around=Subquery(first_around))
        .annotate(
            queued=Exists(others("conversation_id")),
            queued_around=(
                ExpressionWrapper(Q(first_around__isnull=False), output_field=BooleanField())
                if around
                else Value(False)
            ),
        )
        .filter(id=job_id)
    )


# _take and taken_with_queue as one statement, its SQL written once: the claim of every
# extraction run, which built and compiled both querysets again each time (a lone turn's job:
# 14.6 -> 11.7 ms of the worker's CPU; bench/README.md, "Twenty-fifth session"). The subqueries
# read the jobs as they were before the UPDATE: the taken job is left out by its id either way.
_TAKE_WITH_QUEUE = """
WITH taken AS (
 UPDATE memory_processingjob SET status = %(running)s, attempts = attempts + 1, updated_at = %(now)s
 WHERE id = %(id)s AND status IN (%(pending)s, %(running)s)
 AND (status = %(pending)s OR (status = %(running)s AND updated_at < %(stale)s))
 RETURNING *
)
SELECT {job}, {workspace}, {conversation},
 EXISTS (SELECT 1 FROM memory_processingjob o WHERE o.status IN (%(pending)s, %(running)s)
  AND (o.status = %(pending)s OR (o.status = %(running)s AND o.updated_at < %(stale)s))
  AND o.conversation_id = memory_processingjob.conversation_id
  AND o.kind = memory_processingjob.kind AND o.id <> memory_processingjob.id),
 {around}
FROM taken AS memory_processingjob
JOIN accounts_workspace ON accounts_workspace.id = memory_processingjob.workspace_id
JOIN memory_conversation ON memory_conversation.id = memory_processingjob.conversation_id
"""
# As taken_with_queue: the workspace's first queued job in job_unfinished_by_workspace's order.
_QUEUED_AROUND = """(SELECT o.id FROM memory_processingjob o WHERE o.status IN (%(pending)s, %(running)s)
  AND (o.status = %(pending)s OR (o.status = %(running)s AND o.updated_at < %(stale)s))
  AND o.kind = memory_processingjob.kind AND o.workspace_id = memory_processingjob.workspace_id
  AND o.id <> memory_processingjob.id ORDER BY o.upto_message_id LIMIT 1) IS NOT NULL"""
_TAKE_SQL: dict[bool, str] = {}


def _take_with_queue(
    *, job_id: str, now: dt.datetime, around: bool
) -> tuple[ProcessingJob, bool, bool] | None:
    """_take (the same compare-and-set) and taken_with_queue in one statement: the job just
    taken with its conversation and workspace, `queued` and `queued_around`; None when the job
    was not claimable."""
    sql = _TAKE_SQL.get(around)
    if sql is None:
        sql = _TAKE_SQL[around] = _TAKE_WITH_QUEUE.format(
            job=rows.columns(ProcessingJob),
            workspace=rows.columns(Workspace),
            conversation=rows.columns(Conversation),
            around=_QUEUED_AROUND if around else "false",
        )
    params: dict[str, str | dt.datetime] = {
        "id": job_id,
        "now": now,
        "stale": now - lease(),
        "pending": Status.PENDING.value,
        "running": Status.RUNNING.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    job = rows.instance(ProcessingJob, row)
    rest = row[len(ProcessingJob._meta.concrete_fields) :]
    job.workspace = rows.instance(Workspace, rest)
    rest = rest[len(Workspace._meta.concrete_fields) :]
    job.conversation = rows.instance(Conversation, rest)
    queued, queued_around = rest[len(Conversation._meta.concrete_fields) :]
    return job, bool(queued), bool(queued_around)


def job_claim(*, job_id: str) -> ProcessingJob | None:
    """RUNNING for this worker, or None when another run has it (or it is finished).

    One compare-and-set: of two deliveries of one job (a redelivery, a re-send by the sweep),
    exactly one claims it. The returned job's `attempts` is this run's fencing token.
    """
    if not _take(job_id=job_id, now=timezone.now()):
        return None
    return ProcessingJob.objects.select_related("conversation", "workspace").get(id=job_id)


# One run takes at most this many of a conversation's queued jobs, with at most this many
# messages besides the job it was sent for: a batch stays well inside the task's time limit
# (offline, ~25 ms a message on a slow machine: 256 messages ≈ 6 s).
BATCH_JOBS = 32
BATCH_MESSAGES = 256
# What a batch that ran out of time leaves on its jobs, PENDING: each is then claimed alone,
# and only a job that cannot fit its time alone fails (a batch of 32 slow turns, a slow model,
# failed all 32 for good: their memories were never extracted).
TIMED_OUT_IN_BATCH = "time limit exceeded in a batch; runs alone next"


def jobs_claim(
    *, job_id: str, any_conversation: Callable[[ProcessingJob], bool] | None = None
) -> list[ProcessingJob]:
    """The job (first, with its conversation and workspace) and the other jobs of its
    conversation and kind claimable now, oldest first, all RUNNING for this run; [] when
    another run has the job or it is finished (then nothing else is claimed either).

    With `any_conversation(job)` true, the others are those of its kind in its whole workspace,
    each with its conversation: the offline extractor runs many conversations' turns in one run
    (memory.background.extraction.runner), so a worker behind on many users' single turns
    catches up in batches as it does on one user's many turns.

    The others are taken under FOR UPDATE SKIP LOCKED: a job another worker is claiming at
    that moment stays its own. Each claimed job's `attempts` is its fencing token.
    """
    return _claim(job_id=job_id, any_conversation=any_conversation)[0]


def _claim(
    *, job_id: str, any_conversation: Callable[[ProcessingJob], bool] | None
) -> tuple[list[ProcessingJob], bool]:
    """jobs_claim's jobs, and whether claimable jobs of the scope it claimed in were left (the
    batch's caps; its job alone, having run out of time in a batch)."""
    now = timezone.now()
    claimed = _take_with_queue(job_id=job_id, now=now, around=any_conversation is not None)
    if claimed is None:  # the same compare-and-set as job_claim
        return [], False
    job, queued, queued_around = claimed
    wide = any_conversation is not None and queued_around and any_conversation(job)
    if not (queued or wide):  # the usual case when the worker keeps up: no lock, no more
        return [job], False
    if job.error == TIMED_OUT_IN_BATCH:
        return [job], True
    scope = {"workspace_id": job.workspace_id} if wide else {"conversation_id": job.conversation_id}
    others = (
        ProcessingJob.objects.filter(_claimable(now), kind=job.kind, **scope)
        .exclude(id=job.id)
        .exclude(error=TIMED_OUT_IN_BATCH)
    )
    if wide:
        others = others.select_related("conversation")
    messages = (
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"),
            id__gt=OuterRef("after_message_id"),
            id__lte=OuterRef("upto_message_id"),
        )
        .order_by()
        .values("conversation_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    with transaction.atomic():
        candidates = list(
            others.select_for_update(skip_locked=True, of=("self",))
            .annotate(messages=Subquery(messages))
            # one more than it takes: whether any is left
            .order_by("upto_message_id")[:BATCH_JOBS]
        )
        taken, budget = [], BATCH_MESSAGES
        for other in candidates[: BATCH_JOBS - 1]:
            budget -= other.messages or 0
            if budget < 0:
                break
            taken.append(other)
        ProcessingJob.objects.filter(id__in=[o.id for o in taken]).update(
            status=Status.RUNNING, attempts=F("attempts") + 1, updated_at=now
        )
    for other in taken:  # what the update wrote: the rows were locked since they were read
        other.status, other.attempts, other.updated_at = Status.RUNNING, other.attempts + 1, now
        other.workspace = job.workspace
        if not wide:
            other.conversation = job.conversation
    return [job, *taken], len(taken) < len(candidates)


# How many of its unit's jobs a task whose own job was taken tries to claim instead, each
# taken by another run between its read and its claim, before it sends the unit's task again.
UNIT_TRIES = 3


def extraction_claim(
    *, job_id: str, unit: str, any_conversation: Callable[[ProcessingJob], bool] | None = None
) -> tuple[list[ProcessingJob], bool]:
    """jobs_claim for a task sent for its `unit` (extraction_unit; config.coalesce says why):
    the jobs, and whether the unit has claimable jobs this run leaves (then its task must be
    sent again: the turns that queued them sent none, a task for their unit being pending).

    The jobs of the unit committed before the task's start counted on it, its own job or not:
    when another run took its job meanwhile, it claims the unit's oldest claimable job instead,
    with that job's batch."""
    jobs, left = _claim(job_id=job_id, any_conversation=any_conversation)
    for _ in range(UNIT_TRIES):
        if jobs:
            return jobs, left
        first = _unit_first(unit)
        if first is None:
            return [], False
        jobs, left = _claim(job_id=first, any_conversation=any_conversation)
    return jobs, left or not jobs


def _unit_first(unit: str) -> str | None:
    """The unit's oldest claimable extraction job (not one that must run alone: the sweep's)."""
    scope, _, key = unit.partition(":")
    field = _UNIT_COLUMNS.get(scope)
    if field is None or not key:
        return None  # not a unit this release sends
    return (
        ProcessingJob.objects.filter(_claimable(timezone.now()), kind=Kind.EXTRACT, **{field: key})
        .exclude(error=TIMED_OUT_IN_BATCH)
        .order_by("upto_message_id")
        .values_list("id", flat=True)
        .first()
    )
