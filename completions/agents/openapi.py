"""OpenAPI shapes of the agents API (documentation only; see apis.py)."""

from __future__ import annotations

from rest_framework import serializers

from completions.agents.policy import BUDGET_BLOCKS, NAME_PATTERN, PARAMETERS
from config.common.closed import ClosedSerializer
from config.common.openapi import const, list_of
from memory.knowledge.search import MAX_COLLECTIONS


class MemoryPolicySerializer(serializers.Serializer):
    enabled = serializers.BooleanField(
        required=False, help_text="Off: nothing is stored or recalled (default true)."
    )
    extraction = serializers.BooleanField(
        required=False, help_text="Off: turns are stored, no memories extracted (default true)."
    )
    retrieve_messages = serializers.BooleanField(
        required=False, help_text="Off: past conversations are not searched (default true)."
    )
    budgets = serializers.DictField(
        child=serializers.IntegerField(min_value=0),
        required=False,
        help_text=f"Token caps per context block ({', '.join(BUDGET_BLOCKS)}); "
        "absent: the deployment's ENGRAM_CONTEXT_* settings.",
    )


class AgentInputSerializer(ClosedSerializer):
    name = serializers.RegexField(
        NAME_PATTERN, help_text="Unique per workspace; called as `agent:<name>`."
    )
    model = serializers.CharField(help_text="A model name or alias (not another agent).")
    instructions = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="System prompt, put before the client's own system messages; "
        "`{{user_id}}` and `{{date}}` are filled in.",
    )
    parameters = serializers.DictField(
        required=False,
        help_text=f"Defaults for {', '.join(PARAMETERS)}; the request's own values win.",
    )
    memory = MemoryPolicySerializer(
        required=False,
        help_text="The memory policy. A PATCH changes the settings it names, the others keep "
        "theirs (`budgets`, when given, is replaced whole).",
    )
    collection_ids = serializers.ListField(
        child=serializers.CharField(),
        max_length=MAX_COLLECTIONS,
        required=False,
        help_text="Searched on every call; the request's x-collection-ids adds to them. "
        "A deleted collection is no longer searched, and answers leave its id out.",
    )
    metadata = serializers.DictField(required=False)


class AgentSerializer(AgentInputSerializer):
    id = serializers.CharField()
    object = const("agent")
    version = serializers.IntegerField(help_text="The current version's number, from 1.")
    created_at = serializers.IntegerField()
    updated_at = serializers.IntegerField()


class AgentVersionSerializer(AgentInputSerializer):
    object = const("agent.version")
    agent_id = serializers.CharField()
    version = serializers.IntegerField()
    created_at = serializers.IntegerField()


AgentListSerializer = list_of(AgentSerializer, "AgentList")
AgentVersionListSerializer = list_of(AgentVersionSerializer, "AgentVersionList")
