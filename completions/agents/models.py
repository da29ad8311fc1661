"""An agent and its numbered versions.

`Agent` holds the current configuration (what `agent_…` and `agent:<name>` call); every change
writes a new `AgentVersion` with a copy of the whole configuration, so `agent:<name>@<n>` keeps
calling what version n was after later edits. The JSON fields' shapes are checked by
completions.agents.services (the one writer), not here.
"""

from functools import partial

from django.db import models
from django.utils import timezone

from accounts.models import Workspace
from config.common.ids import new_id

# The configuration every version copies (the agent's name included: a rename is a version).
CONFIG_FIELDS = (
    "name",
    "instructions",
    "model",
    "parameters",
    "memory",
    "collection_ids",
    "metadata",
)


class Agent(models.Model):
    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "agent"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(
        max_length=64, help_text="Called as agent:<name>; unique per workspace."
    )
    instructions = models.TextField(
        blank=True, default="", help_text="System prompt; may use {{user_id}} and {{date}}."
    )
    model = models.CharField(max_length=200, help_text="A model name or the workspace's alias.")
    parameters = models.JSONField(default=dict, blank=True)  # temperature, max_tokens, …
    memory = models.JSONField(default=dict, blank=True)  # the memory policy
    collection_ids = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)  # the current version's number
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="one_agent_per_name")
        ]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"


class AgentVersion(models.Model):
    """One version of an agent's configuration, never changed once written."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=64)
    instructions = models.TextField(blank=True, default="")
    model = models.CharField(max_length=200)
    parameters = models.JSONField(default=dict, blank=True)
    memory = models.JSONField(default=dict, blank=True)
    collection_ids = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["agent", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "version"], name="one_agent_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
