"""Writes for an agent's tools: create, update (headers kept masked, the stored secret kept
where a client sends the mask back), delete, within an agent's room and memory settings."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import Workspace
from completions.agents.models import Agent
from completions.tools import cache, policy
from completions.tools.models import Tool
from config.common import addresses, crypto
from config.common.closed import unknown_fields_check
from config.common.errors import Invalid, NotFound, unknown_id
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
        description = values["description"]
        if not isinstance(description, str) or len(description) > policy.MAX_DESCRIPTION:
            raise Invalid(
                f"description must be a string of {policy.MAX_DESCRIPTION:,} characters at most.",
                field="description",
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
        raise NotFound(unknown_id("agent", agent_id), field="agent_id", code="agent_not_found")
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
