"""OpenAPI shapes of the tools, executions and resume APIs (documentation only; see apis.py)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from completions.openapi import SSE_EVENT, ref
from completions.tools.policy import (
    BUILTINS,
    MAX_DESCRIPTION,
    MAX_HEADER_NAME,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_REASON,
    MAX_TIMEOUT,
    MAX_TTL,
    METHODS,
    NAME_PATTERN,
)
from config.common.closed import ClosedSerializer
from config.common.openapi import const, list_of


class HttpToolSerializer(serializers.Serializer):
    url = serializers.URLField(
        help_text="An http(s) URL: no whitespace, no user:password@, a host that is an IP "
        "address or a DNS name, a port in 1-65535 (else 400 naming http.url). "
        "Private and loopback addresses are refused unless "
        "ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS. For GET and DELETE, the arguments are added to "
        "its query string; its own parameters win (an argument of the same name is left out)."
    )
    method = serializers.ChoiceField(choices=METHODS, required=False, help_text="Default POST.")
    headers = serializers.DictField(
        child=serializers.CharField(max_length=MAX_HEADER_VALUE),
        required=False,
        help_text=f"At most {MAX_HEADERS}, each name up to {MAX_HEADER_NAME} letters, digits, "
        f"_ or -, each value up to {MAX_HEADER_VALUE} characters. "
        "Sent with every call; values are encrypted at rest and answered as ***. "
        "*** written back keeps the stored value of that header. Host, Content-Length, "
        "Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer, Proxy-*, "
        "Idempotency-Key and x-engram-hop are refused.",
    )


class ToolInputSerializer(ClosedSerializer):
    name = serializers.RegexField(
        NAME_PATTERN, help_text="The function name the model calls (unique per agent)."
    )
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_DESCRIPTION
    )
    parameters = serializers.DictField(required=False, help_text="A JSON schema of type object.")
    type = serializers.ChoiceField(choices=["http", "builtin"])
    http = HttpToolSerializer(required=False)
    builtin = serializers.ChoiceField(choices=BUILTINS, required=False)
    approval = serializers.JSONField(
        required=False,
        help_text='"never" (default), "always", or a rule on the arguments: '
        '{"argument", "op": eq|ne|gt|gte|lt|lte|in|contains, "value"} (in takes a list) or '
        '{"any": [rules]}.',
    )
    approval_ttl_seconds = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_TTL,
        help_text="How long an approval waits (default 900); then rejected.",
    )
    timeout_seconds = serializers.FloatField(
        required=False,
        max_value=MAX_TIMEOUT,
        help_text=f"Seconds, over 0 and at most {MAX_TIMEOUT:g}; default 10.",
    )


class ToolSerializer(ToolInputSerializer):
    http = HttpToolSerializer(allow_null=True, help_text="null for a built-in tool.")
    builtin = serializers.ChoiceField(choices=BUILTINS, allow_null=True)
    id = serializers.CharField()
    object = const("agent.tool")
    agent_id = serializers.CharField()
    created_at = serializers.IntegerField()
    updated_at = serializers.IntegerField()


ToolListSerializer = list_of(ToolSerializer, "ToolList")


class ExecutionApprovalSerializer(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.CharField(help_text="pending, approved, rejected or expired.")
    tool_call_ids = serializers.ListField(child=serializers.CharField())
    expires_at = serializers.IntegerField()
    decided_at = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField()


class ExecutionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("execution")
    agent_id = serializers.CharField()
    model = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    request_id = serializers.CharField()
    status = serializers.CharField(help_text="running, waiting_approval, completed or failed.")
    error = serializers.CharField(allow_null=True)
    steps = serializers.ListField(
        child=serializers.DictField(),
        help_text="model, tool and approval steps in order (see README, Tools).",
    )
    approvals = ExecutionApprovalSerializer(many=True)
    usage = serializers.DictField()
    created_at = serializers.IntegerField()
    updated_at = serializers.IntegerField()


ExecutionListSerializer = list_of(ExecutionSerializer, "ExecutionList")

EXECUTION_LIST_PARAMETERS = [
    OpenApiParameter(
        "status",
        str,
        enum=["running", "waiting_approval", "completed", "failed"],
        description="Only these.",
        required=False,
    ),
    OpenApiParameter("agent_id", str, description="Only this agent's runs.", required=False),
]


class ApprovalToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    arguments = serializers.CharField(help_text="As the model sent them (JSON, or not).")


class ApprovalSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("approval")
    execution_id = serializers.CharField()
    agent_id = serializers.CharField()
    model = serializers.CharField(help_text="What the run's request sent as `model`.")
    user_id = serializers.CharField(allow_null=True)
    status = serializers.CharField(
        help_text="pending, approved, rejected or expired (a pending one past its expiry)."
    )
    tool_calls = ApprovalToolCallSerializer(many=True, help_text="The calls it decides.")
    reason = serializers.CharField()
    expires_at = serializers.IntegerField()
    decided_at = serializers.IntegerField(allow_null=True)
    created_at = serializers.IntegerField()


ApprovalListSerializer = list_of(ApprovalSerializer, "ApprovalList")

APPROVAL_LIST_PARAMETERS = [
    OpenApiParameter(
        "status",
        str,
        enum=["pending", "approved", "rejected", "expired"],
        description="Only these (pending: still to be decided, not expired).",
        required=False,
    ),
    OpenApiParameter("agent_id", str, description="Only this agent's runs'.", required=False),
]


class ResumeInputSerializer(ClosedSerializer):
    approval_id = serializers.CharField()
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_REASON,
        help_text='On reject: what the model is told ("The user rejected this call: <reason>").',
    )
    stream = serializers.BooleanField(required=False)
    stream_options = serializers.DictField(
        required=False,
        help_text='As on /v1/chat/completions: {"include_usage": bool}, with `stream: true` only.',
    )
    user_id = serializers.CharField(
        required=False,
        help_text="The end user, as on /v1/chat/completions (or `x-user-id`): the approval's.",
    )
    user = serializers.CharField(
        required=False, help_text="OpenAI's name of the end user; `user_id` and x-user-id win."
    )
    metadata = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text="As on /v1/chat/completions: strings; its `request_id` is echoed as the "
        "answer's `engram.request_id` (streamed: on the last chunk) and kept in the usage "
        "record.",
    )


class ChatResumeDoc(APIView):
    openapi_errors = {
        400: "A missing or malformed field (`metadata` not an object of strings included).",
        401: "A missing or unknown key.",
        403: "An operator key.",
        404: "An unknown approval, another workspace's, or another end user's (`x-user-id`); "
        "`agent_not_found` when the run's agent was deleted while it waited.",
        409: "`run_in_progress`: the same decision sent again while the run it started still "
        "runs (`retry-after` says when to come back; an SDK's retry once it answered gets "
        "that answer, `engram.replayed`).",
        410: "The approval was already used or expired (`approval_used`, `approval_expired`); "
        "an expired approval has been resolved as rejected.",
        429: "`rate_limit_exceeded` (`retry-after`) or `insufficient_quota`, as on "
        "/v1/chat/completions: a resume is admitted against the same limits and budgets, "
        "before its approval is claimed (a refused resume leaves the approval pending).",
        503: "`limits_unavailable`: Redis is unreachable and limits fail closed.",
    }

    @extend_schema(
        operation_id="chat_resume",
        summary="Decide a pending tool approval and continue the paused run",
        description="The answer has the shapes of /v1/chat/completions (JSON, or server-sent "
        "events with `stream: true`), its `engram.credits_charged` (every upstream call of "
        "this resume, summed) and rate-limit headers included; it may pause again with a new "
        "`engram.approval_id`. "
        "An approval is used once: a second resume gets 410, but 409 `run_in_progress` "
        "while the run the same decision started still runs, and that run's answer for an "
        "SDK's retry (x-stainless-retry-count) once it answered.",
        tags=["chat"],
        request=ResumeInputSerializer,
        responses={
            (200, "application/json"): OpenApiResponse(ref("ChatCompletion")),
            (200, "text/event-stream"): OpenApiResponse(SSE_EVENT),
        },
        examples=[
            OpenApiExample(
                "Approve",
                value={"approval_id": "appr_...", "decision": "approve"},
                request_only=True,
            )
        ],
    )
    def post(self, request): ...
