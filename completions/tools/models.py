"""A tool of an agent, an execution (one run of the tool loop, every step recorded) and an
approval (a paused run waiting for a human's decision).

The pending state of a paused run lives in its Execution row (the upstream messages so far and
the calls that wait), so any process can resume it; an Approval is claimed once by
compare-and-set on its status (completions.tools.services.approval_claim).
"""

import datetime as dt
from functools import partial

from django.db import models
from django.utils import timezone

from accounts.models import Workspace
from completions.agents.models import Agent
from config.common.ids import new_id

DEFAULT_APPROVAL_TTL = 15 * 60


def approval_never() -> str:
    """The default approval policy (a callable: Django wants one for a JSONField default)."""
    return "never"


class Tool(models.Model):
    class Kind(models.TextChoices):
        HTTP = "http"
        BUILTIN = "builtin"

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "tool"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=64, help_text="The function name the model calls.")
    description = models.TextField(blank=True, default="")
    parameters = models.JSONField(default=dict, blank=True)  # a JSON schema
    kind = models.CharField(max_length=16, choices=Kind.choices)
    builtin = models.CharField(max_length=32, blank=True, default="")
    http_url = models.URLField(max_length=2000, blank=True, default="")
    http_method = models.CharField(max_length=8, blank=True, default="POST")
    # {name: value} as one Fernet token (config.common.crypto): header values are secrets.
    http_headers_encrypted = models.TextField(blank=True, default="")
    timeout_seconds = models.FloatField(default=10.0)
    approval = models.JSONField(default=approval_never)  # "never" | "always" | {rule}
    approval_ttl_seconds = models.PositiveIntegerField(default=DEFAULT_APPROVAL_TTL)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "name"], name="one_tool_per_agent_name")
        ]

    def __str__(self) -> str:
        return self.name


# Execution.error of a run that ended for good (no resume or request sent again claims it
# back): its approval expired, or its agent was deleted while it waited (agent_runs_end).
# Here, beside the row, so the services that write them and the selectors that read them both
# import them at module level.
EXPIRED_ERROR = "approval expired"
AGENT_DELETED_ERROR = "agent deleted"
ENDED_ERRORS = (EXPIRED_ERROR, AGENT_DELETED_ERROR)


class Execution(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        WAITING = "waiting_approval"
        COMPLETED = "completed"
        FAILED = "failed"

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "exec"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    agent_id = models.CharField(max_length=40)
    # The agent's version the run started with: a resume's usage row names it, as the first's.
    agent_version = models.PositiveIntegerField(null=True, blank=True)
    user_id = models.CharField(max_length=200, blank=True, default="")
    request_id = models.CharField(max_length=128, blank=True, default="")
    # Digest of the chat request that started the run (its model, conversation and session
    # ids, messages): the same request sent again (an SDK's retry, which carries no
    # Idempotency-Key) goes on from this run instead of running its tools a second time.
    request_digest = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=200)  # what the client sent, named in every answer
    route_model = models.CharField(max_length=200)  # what routing resolves on resume
    stream = models.BooleanField(default=False)
    collection_ids = models.JSONField(default=list)  # what knowledge_search searches
    # The memory conversation (and session) the turn is stored in; blank: memory stores nothing.
    conversation_pk = models.CharField(max_length=40, blank=True, default="")
    session_pk = models.CharField(max_length=40, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    # The upstream body without messages (parameters, tools) and the messages so far.
    body = models.JSONField(default=dict)
    # The names of the agent's tools `body["tools"]` offered when the run started: the others
    # there are the request's own. Each model call offers the request's tools with the agent's
    # as they are then (completions.tools.run.Run.call), and a call of a tool neither has is
    # answered as no such tool. Empty for a run started before this was kept.
    agent_tools = models.JSONField(default=list, blank=True)
    messages = models.JSONField(default=list)
    steps = models.JSONField(default=list)  # see completions.tools.run: one dict per step
    # While waiting: {"message": the assistant message, "waiting": [ids of the calls it holds]}
    pending = models.JSONField(default=dict)
    usage = models.JSONField(default=dict)  # summed over every upstream call of the run
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # The last sign of life of the process running the run: each write of its state, and a
    # touch every services.HEARTBEAT_EVERY while a model or tool call is in flight. A `running`
    # run whose heartbeat is older than services.LOST_AFTER lost its process: the same request
    # sent again goes on with it (completions.tools.entry.sent_again). Null: a run started
    # before heartbeats were kept, lost only after services.STALE_RUN.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Who runs it: a token each claim of the run gives it (its start, a resume's claim, its
    # request sent again taking it over) and the sweep takes away when it finds the process
    # lost. The run's state is written only under the token it was claimed with
    # (services.execution_save), so a process taken for lost while it was alive stops at its
    # next write instead of writing over its new owner's state or running tools a second time.
    owner = models.CharField(max_length=40, blank=True, default="")
    # Engram's own `_engram…` calls (completions.engram_tools) that led the run's answer: an
    # SDK's retry of the request gets them again with it (completions.tools.entry.replay).
    preface = models.JSONField(default=list, blank=True)
    # Where the request now running the run begins in its steps: 0 for the request that started
    # it; after the calls it answered as interrupted for its chat request sent again, which went
    # on with it (a failed run claimed back, a lost one taken over); before its approval step
    # for a resume. An SDK's retry of an answered request replays that request's part alone,
    # as its answer showed it (completions.tools.entry.replay): its calls, and its model calls'
    # usage. The whole run's were a taken-over run's first process's interrupted calls and usage
    # too, which the answer it replays never had.
    request_step = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["workspace", "-created_at"], name="execution_recent"),
            # A workspace's end users, one user's counts and their erasure read runs by user.
            models.Index(fields=["workspace", "user_id"], name="execution_user"),
            # A chat request sent again finds its run (completions.tools.selectors).
            models.Index(
                fields=["workspace", "user_id", "request_digest", "-created_at"],
                name="execution_request",
                condition=~models.Q(request_digest=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class Approval(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"  # resolved as rejected by the sweep or a late resume

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "appr"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="approvals")
    user_id = models.CharField(max_length=200, blank=True, default="")
    tool_calls = models.JSONField(default=list)  # the calls this decision covers
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.TextField(blank=True, default="")
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(
                fields=["expires_at"],
                name="approval_pending_expiry",
                condition=models.Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @staticmethod
    def expiry(ttl_seconds: int) -> dt.datetime:
        return timezone.now() + dt.timedelta(seconds=ttl_seconds)
