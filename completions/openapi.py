"""OpenAPI documentation of the gateway's plain Django views (documentation only).

The chat door is a lean ASGI app and a plain async view, /v1/context and /v1/models plain async
views: drf-spectacular sees none of them. Each has a DRF view here that is never routed;
`config.openapi.endpoints` puts it at the real view's path. Nothing here runs on a request.

OpenAI's shapes are raw JSON Schema (`SCHEMAS`, added to the document's components by
`config.openapi.components`): a chat body passes unknown fields through, and its content is a
string or a list of parts, which serializers say badly.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.views import APIView

from accounts.authentication import EndUserAllowed
from completions.embeddings import MAX_INPUT_TOKENS, MAX_INPUTS, MAX_TOTAL_TOKENS
from completions.request import HEADERS
from config.common.openapi import ID_SCHEMA
from memory.knowledge.search import MAX_COLLECTIONS


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


_NULLABLE_STRING = {"type": ["string", "null"]}

# What a turn was given, in its `engram` block (memory.turn.pipeline): a memory or a past message.
_USED_ITEM = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "line": {"type": "string"},
        "score": {"type": ["number", "null"]},
        "why": {"type": "string"},
    },
}
# What memory did for a turn: on a completion (with its charge and request id) and on a preview.
_ENGRAM_PROPERTIES: dict[str, dict] = {
    "credits_charged": {
        "type": "number",
        "description": "The upstream's reported usage (else the estimate in `usage`) at the "
        "price table's rates, in the workspace's credit unit.",
    },
    "request_id": {
        "type": "string",
        "description": "The client's `metadata.request_id` when given, else Engram's.",
    },
    "session_id": _NULLABLE_STRING,
    "conversation_id": _NULLABLE_STRING,
    "memories_used": {"type": "integer"},
    "memories": {
        "type": "array",
        "description": "The user's memories this answer was given: each one's id (as in "
        "/v1/memories), the line the model read, its score and why it was chosen.",
        "items": _USED_ITEM,
    },
    "messages_retrieved": {"type": "integer"},
    "messages": {
        "type": "array",
        "description": "The user's past messages this answer was given, as `memories`: each "
        "one's id (as in /v1/conversations/{id}/messages), the line the model read, its score "
        "and why it was chosen.",
        "items": _USED_ITEM,
    },
    "history_messages": {"type": "integer"},
    "context_tokens": {"type": "integer"},
    "sources": {"type": "array", "items": ref("EngramSource")},
}
# One event of a streamed answer, as a client's SSE reader sees it (read as each event's schema
# by schemathesis for OpenAPI before 3.2, which has no `itemSchema`).
SSE_EVENT = {
    "type": "object",
    "description": "Server-sent events: each `data: ` holds a ChatCompletionChunk "
    "(#/components/schemas/ChatCompletionChunk), the last with Engram's `engram` object, "
    "then `data: [DONE]`.",
    "required": ["data"],
    "properties": {
        "data": {
            "description": "A chunk's JSON, or `[DONE]` at the end.",
            "anyOf": [
                {"const": "[DONE]"},
                {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": ref("ChatCompletionChunk"),
                },
            ],
        },
        "event": {"type": "string"},
        "id": {"type": "string"},
    },
}

SCHEMAS: dict[str, dict] = {
    "ChatMessage": {
        "type": "object",
        "description": "One message of OpenAI's chat format (every role, parts, tool calls).",
        "required": ["role"],
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "object"}},
                    {"type": "null"},
                ],
                "description": "Text, or content parts (`text`, `image_url`, `input_audio`, "
                "`file`); null on an assistant message with tool calls.",
            },
            "name": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
            "tool_call_id": {"type": "string"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "description": "OpenAI's request; fields Engram does not know reach the upstream "
        "unchanged. `session_id` and `user_id` are Engram's own (removed before the upstream "
        "call).",
        "required": ["model", "messages"],
        "properties": {
            "model": {
                "type": "string",
                "minLength": 1,
                "examples": ["local", "agent:support"],
                "description": "A model, an alias, or an agent: `agent_…`, `agent:<name>`, "
                "`agent:<name>@<version>` (an unknown or foreign agent: 404 `model_not_found`).",
            },
            "messages": {"type": "array", "minItems": 1, "items": ref("ChatMessage")},
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
            "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "n": {"type": "integer", "minimum": 1, "maximum": 8},
            "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {"oneOf": [{"type": "string"}, {"type": "object"}]},
            "response_format": {"type": "object"},
            "user": {
                **ID_SCHEMA,
                "description": "The end user, when neither `x-user-id` nor `user_id` is sent "
                "(passed on to the upstream either way).",
            },
            "user_id": {
                **ID_SCHEMA,
                "description": "Engram: the end user, as the memory API's bodies name it, when "
                "`x-user-id` is not sent (naming another user than it: 400 `user_mismatch`).",
            },
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "session_id": {
                **ID_SCHEMA,
                "description": "Engram: the session, when `x-session-id` is not sent.",
            },
        },
    },
    "EngramSource": {
        "type": "object",
        "description": "A knowledge chunk the answer's context used.",
        "properties": {
            "collection_id": {"type": "string"},
            "document_id": {"type": "string"},
            "title": {"type": "string"},
            "chunk_index": {"type": "integer"},
            "score": {"type": "number"},
            "snippet": {"type": "string"},
        },
    },
    "Engram": {
        "type": "object",
        "description": "On every completion (in streams: on the last chunk before "
        "`data: [DONE]`, the usage chunk when `stream_options.include_usage` asks for one "
        "(the estimate charged when the upstream reported no usage), "
        "else the chunk with the finish reason): the credits charged, the request id, and what memory did for "
        "this turn when it did something.",
        "required": ["credits_charged", "request_id"],
        "properties": _ENGRAM_PROPERTIES,
    },
    "ContextEngram": {
        "type": "object",
        "description": "What memory would do for this turn (empty with no user): a preview "
        "calls nothing and charges nothing, so no `credits_charged` and no `request_id`.",
        "properties": {
            name: value
            for name, value in _ENGRAM_PROPERTIES.items()
            if name not in ("credits_charged", "request_id")
        },
    },
    "Usage": {
        "type": "object",
        "description": "The upstream's reported usage; when it reported none, the estimate "
        "Engram charged (the prompt as sent and the answer's words, tiktoken-counted; an "
        "agent's run: each model call's, summed).",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "description": "OpenAI's chat completion, as the upstream answered, plus `engram`.",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": _NULLABLE_STRING,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {
                            "type": "object",
                            "required": ["role"],
                            "properties": {
                                "role": {"const": "assistant"},
                                "content": _NULLABLE_STRING,
                                "refusal": _NULLABLE_STRING,
                                "tool_calls": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                        "logprobs": {"type": ["object", "null"]},
                        "finish_reason": _NULLABLE_STRING,
                    },
                },
            },
            "usage": ref("Usage"),
            "engram": ref("Engram"),
        },
    },
    "ChatCompletionChunk": {
        "type": "object",
        "description": "One `data:` event of a stream. After the last choice chunk (and the "
        "usage chunk, `choices: []`, when asked) Engram sends a chunk carrying `engram`, then "
        '`data: [DONE]`. A failure after the first byte is one `data: {"error": ...}` event '
        "(the envelope), then `data: [DONE]`.",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion.chunk"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "delta"],
                    "properties": {
                        "index": {"type": "integer"},
                        "delta": {
                            "type": "object",
                            "properties": {
                                "role": {"type": "string"},
                                "content": _NULLABLE_STRING,
                                "tool_calls": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                        "logprobs": {"type": ["object", "null"]},
                        "finish_reason": _NULLABLE_STRING,
                    },
                },
            },
            "usage": {"oneOf": [ref("Usage"), {"type": "null"}]},
            "engram": ref("Engram"),
        },
    },
    "ContextPreview": {
        "type": "object",
        "required": ["object", "messages", "context_tokens", "blocks", "engram"],
        "properties": {
            "object": {"const": "context"},
            "model": _NULLABLE_STRING,
            "user_id": _NULLABLE_STRING,
            "agent": {
                "type": ["object", "null"],
                "description": "The agent version `model` called and what it added: id, name, "
                "version, model, instructions (filled in), parameters, memory, collection_ids.",
            },
            "messages": {"type": "array", "items": ref("ChatMessage")},
            "context_tokens": {"type": "integer"},
            "budget": {
                "type": ["object", "null"],
                "properties": {
                    "context_window": {"type": "integer"},
                    "reserved_for_completion": {"type": "integer"},
                    "reserved_for_definitions": {
                        "type": "integer",
                        "description": "Tokens of the request's `tools`, `functions` and "
                        "`response_format`, which the model reads beside the messages.",
                    },
                    "available": {"type": "integer"},
                },
            },
            "blocks": {
                "type": "array",
                "description": "Each block of the context, its tokens and why each item was chosen.",
                "items": {"type": "object"},
            },
            "engram": ref("ContextEngram"),
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {
                "type": "integer",
                "description": "When the upstream says the model was made (Unix seconds); 0 "
                "for Engram's own names and where the upstream does not say.",
            },
            "owned_by": {"type": "string"},
            "target": {
                "type": "string",
                "description": "A workspace alias's upstream model, or an agent's model.",
            },
            "agent_id": {"type": "string", "description": "An agent's id (`agent:<name>`)."},
            "version": {"type": "integer", "description": "An agent's current version."},
            "type": {
                "const": "embedding",
                "description": "Engram's embedding model (POST /v1/embeddings), not a chat model.",
            },
            "default": {
                "const": True,
                "description": "The model the workspace's routes default to (Engram's own calls "
                "use it): `ENGRAM_MEMORY_LLM_MODEL`, else a small model of the configured "
                "upstream; `local` when no upstream is configured.",
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref("Model")},
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["input", "model"],
        "additionalProperties": False,
        "properties": {
            "input": {
                "description": "The text to embed: a string, or an array of at most "
                f"{MAX_INPUTS} strings, none empty; each at most {MAX_INPUT_TOKENS} and all "
                f"together at most {MAX_TOTAL_TOKENS} tokens (cl100k). The model reads the "
                "first 256 word pieces of each. Token arrays are refused (400).",
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_INPUTS,
                        "items": {"type": "string", "minLength": 1},
                    },
                ],
            },
            "model": {
                "type": "string",
                "description": "Engram's embedding model, as GET /v1/models lists it "
                "(`ENGRAM_EMBEDDING_MODEL`, default `all-MiniLM-L6-v2`); any other is a 404.",
            },
            "encoding_format": {"enum": ["float", "base64"], "default": "float"},
            "dimensions": {
                "type": "integer",
                "description": "Only the model's own (384 for all-MiniLM-L6-v2): it cannot be "
                "shortened.",
            },
            "user": {
                "type": "string",
                "description": "The end user (as `x-user-id`, which wins); counted against "
                "that user's limits.",
            },
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "index", "embedding"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": {"type": "integer"},
                        "embedding": {
                            "description": "Unit length. `float`: an array of numbers; "
                            "`base64`: the float32 values, little-endian, base64-encoded.",
                            "oneOf": [
                                {"type": "array", "items": {"type": "number"}},
                                {"type": "string"},
                            ],
                        },
                    },
                },
            },
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "total_tokens"],
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                },
            },
        },
    },
}

# Engram's headers on a chat request (and on /v1/context), as completions.request reads them.
TURN_HEADERS = [
    OpenApiParameter(
        HEADERS["user_id"],
        ID_SCHEMA,
        OpenApiParameter.HEADER,
        description="The end user whose memory this turn uses (else the body's `user_id`, "
        "else its `user`).",
    ),
    OpenApiParameter(
        HEADERS["conversation_id"],
        ID_SCHEMA,
        OpenApiParameter.HEADER,
        description="The client's conversation id: Engram stores the turn in it and puts "
        "earlier turns back when only new messages are sent.",
    ),
    OpenApiParameter(
        HEADERS["session_id"],
        ID_SCHEMA,
        OpenApiParameter.HEADER,
        description="The session (else the body's `session_id`; created on first use, echoed).",
    ),
    OpenApiParameter(
        HEADERS["workspace_id"],
        str,
        OpenApiParameter.HEADER,
        description="Must name the key's workspace (403 `workspace_mismatch` otherwise).",
    ),
    OpenApiParameter(
        HEADERS["collection_ids"],
        str,
        OpenApiParameter.HEADER,
        description=f"A JSON array of at most {MAX_COLLECTIONS} distinct knowledge collection "
        'ids (a repeated id counts once), e.g. `["col_..."]`; their best chunks join the '
        "context. Sent once: two of these headers are a 400 that says so.",
    ),
]


def _response_header(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(
        name, str, OpenApiParameter.HEADER, response=[200], description=description
    )


_CHAT_RESPONSE_HEADERS = [
    _response_header("x-request-id", "This request's id."),
    _response_header("openai-processing-ms", "Time spent in Engram and the upstream."),
    _response_header("x-engram-upstream-ms", "Time spent waiting on the upstream."),
    _response_header("x-engram-overhead-ms", "Engram's own time."),
    _response_header("x-engram-memories-used", "Memories put in the context."),
    _response_header("x-engram-context-tokens", "Tokens of the assembled context."),
    _response_header("x-session-id", "The session of this turn, when there is one."),
    *(
        _response_header(
            f"x-ratelimit-{what}-{kind}",
            f"OpenAI's rate-limit header ({what} {kind} of the tightest limit that applies; "
            "only when a limit of that kind is set; reset as a duration: `20ms`, `6m0s`).",
        )
        for kind in ("requests", "tokens")
        for what in ("limit", "remaining", "reset")
    ),
]

_EXAMPLE_BODY = {
    "model": "local",
    "messages": [{"role": "user", "content": "Hi, I live in Berlin."}],
}


class ChatCompletionsDoc(APIView):
    permission_classes = [EndUserAllowed]  # documents: an end user's token works here too
    openapi_errors = {
        400: "Invalid body or header (OpenAI's 400s; `param` names the field or header); "
        "`context_length_exceeded`: the request's own messages, tools and `max_tokens` cannot "
        "fit the model's known window (answered without calling the upstream); or the "
        "upstream's own 400.",
        401: "A missing or unknown key (an upstream refusing Engram's own key is a 502, below).",
        403: "An operator key (`workspace_key_required`), `x-workspace-id` naming another "
        "workspace, or an end-user "
        "token with an `x-user-id` or `user` naming another user (`user_mismatch`).",
        404: "A collection in `x-collection-ids` that is not the workspace's, an unknown or "
        "foreign agent (`model_not_found`), or the upstream's 404 (an unknown model).",
        409: "`run_in_progress`: an agent's tool run of the same request (same end user, "
        "conversation and messages) is still running in a live process; its tools are not run "
        "twice. `retry-after` says when it would be taken as lost (its process silent for 40 "
        "seconds), with `x-should-retry: true` (`false` for a run older than heartbeats). Sent "
        "again once it has ended or was lost, the request goes on from the results its tools "
        "recorded; an SDK's retry of one that answered gets that answer. `run_taken_over`: "
        "this request's run was taken as lost while it ran (its heartbeat silent for 40 "
        "seconds) and taken over by the same request sent again; nothing more runs here. Sent "
        "again, it finds that run going on, or gets its answer.",
        413: "The body is over `ENGRAM_MAX_REQUEST_BYTES` (refused from its `Content-Length` "
        "unread, the connection closed).",
        415: None,
        429: "`rate_limit_exceeded`: over a limit of the key, the workspace or the end user "
        "(the message says which; `retry-after`); `insufficient_quota`: over a budget (do not "
        "retry); or the upstream's rate limit, after Engram's retries (`retry-after` passed on).",
        503: "`limits_unavailable`: Redis is unreachable and limits fail closed "
        "(budgets by default; ENGRAM_LIMITS_*_FAIL_OPEN).",
        502: "The upstream failed (5xx or connection error) after Engram's retries, refused "
        "Engram's own provider key (`upstream_credential_refused`), redirected "
        "(`upstream_redirect`) or found its account out of quota (`upstream_quota_exceeded`): "
        "these three with `x-should-retry: false`; or it sent a reply Engram cannot read.",
        504: "The upstream timed out (`ENGRAM_UPSTREAM_TIMEOUT`).",
    }

    @extend_schema(
        operation_id="chat_completions_create",
        summary="Create a chat completion (OpenAI's API, with memory)",
        description="OpenAI's whole request and response; the official SDKs work unchanged "
        "(`base_url=http://host/v1`). With `stream: true` the answer is server-sent events: "
        "`data: <ChatCompletionChunk>` lines, Engram's `engram` chunk, then `data: [DONE]`. "
        "An upstream 4xx keeps its status and message, except a refusal of Engram's own provider "
        "key (401, 403, 407): 502 `upstream_credential_refused`. Function tools named "
        "`_engramSearchProgress`, `_engramSearchSources`, `_engramAppendConversationMessage` are "
        "not sent upstream: Engram calls them itself (first in the stream, before the model's "
        "first token; first in `message.tool_calls`) with the searches, the sources and the "
        "conversation of the turn (their arguments: README, *Agents*).",
        tags=["chat"],
        parameters=[*TURN_HEADERS, *_CHAT_RESPONSE_HEADERS],
        request={"application/json": ref("ChatCompletionRequest")},
        responses={
            (200, "application/json"): OpenApiResponse(ref("ChatCompletion")),
            (200, "text/event-stream"): OpenApiResponse(SSE_EVENT),
        },
        examples=[
            OpenApiExample("No-LLM mode", value=_EXAMPLE_BODY, request_only=True),
            OpenApiExample(
                "Answer",
                value={
                    "id": "chatcmpl-0f2c...",
                    "object": "chat.completion",
                    "created": 1764700000,
                    "model": "local",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "(local model, no LLM configured) You said: "
                                "Hi, I live in Berlin.",
                                "refusal": None,
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 6, "completion_tokens": 12, "total_tokens": 18},
                    "engram": {
                        "session_id": "sess_...",
                        "conversation_id": None,
                        "memories_used": 1,
                        "messages_retrieved": 0,
                        "history_messages": 0,
                        "context_tokens": 42,
                    },
                },
                response_only=True,
                status_codes=["200"],
                media_type="application/json",
            ),
            OpenApiExample(
                "Streamed",
                value=_EXAMPLE_BODY | {"stream": True, "stream_options": {"include_usage": True}},
                request_only=True,
            ),
        ],
    )
    def post(self, request): ...


class ContextDoc(APIView):
    permission_classes = [EndUserAllowed]  # documents: an end user's token works here too
    openapi_errors = {
        400: ChatCompletionsDoc.openapi_errors[400],
        401: None,
        403: ChatCompletionsDoc.openapi_errors[403],
        404: "A collection in `x-collection-ids` that is not the workspace's.",
        413: None,
        415: None,
    }

    @extend_schema(
        operation_id="context_preview",
        summary="Preview the context Engram would send (nothing stored, no upstream call)",
        description="The chat request's body and headers (`model` optional); answers the exact "
        "messages Engram would send upstream, `context_tokens`, tokens per block and why each "
        "item was chosen.",
        tags=["chat"],
        parameters=TURN_HEADERS,
        request={
            "application/json": {
                "type": "object",
                "required": ["messages"],
                "properties": {
                    "model": {"type": "string"},
                    "messages": SCHEMAS["ChatCompletionRequest"]["properties"]["messages"],
                },
            }
        },
        responses={200: OpenApiResponse(ref("ContextPreview"))},
        examples=[OpenApiExample("A question", value=_EXAMPLE_BODY, request_only=True)],
    )
    def post(self, request): ...


class ModelListDoc(APIView):
    permission_classes = [EndUserAllowed]  # documents: an end user's token works here too
    openapi_errors = {401: None, 403: None}

    @extend_schema(
        operation_id="models_list",
        summary="The models this workspace can use",
        description="The workspace's agents (`agent:<name>`, owned by the workspace), aliases, "
        "`local`, Engram's embedding model (`type: embedding`), and the configured upstreams' "
        "own `/models`; the model the workspace's routes default to has `default: true`.",
        tags=["chat"],
        responses={200: OpenApiResponse(ref("ModelList"))},
    )
    def get(self, request): ...


class ModelDoc(APIView):
    permission_classes = [EndUserAllowed]  # documents: an end user's token works here too
    openapi_errors = {401: None, 403: None, 404: "No such model (`model_not_found`)."}

    @extend_schema(
        operation_id="models_retrieve",
        summary="One model",
        tags=["chat"],
        responses={200: OpenApiResponse(ref("Model"))},
    )
    def get(self, request, model_id: str): ...


class EmbeddingsDoc(APIView):
    permission_classes = [EndUserAllowed]  # documents: an end user's token works here too
    openapi_errors = {
        400: "Invalid body (OpenAI's 400s; `param` names the field): an unknown field "
        "(`unknown_parameter`), a missing or empty `input`, token arrays "
        "(`unsupported_value`), too many or too long inputs, `dimensions` other than the "
        "model's (`unsupported_value`), an unknown `encoding_format`.",
        401: None,
        403: "An operator key (`workspace_key_required`), or an end-user token with an "
        "`x-user-id` or `user` naming another user (`user_mismatch`).",
        404: "`model_not_found`: a model other than Engram's embedding model (embeddings are "
        "not proxied to an upstream).",
        413: None,
        415: None,
        429: "`rate_limit_exceeded`: over a limit of the key, the workspace or the end user.",
        503: "`limits_unavailable`: Redis is unreachable and limits fail closed.",
    }

    @extend_schema(
        operation_id="embeddings_create",
        summary="Embed text with Engram's embedding model (OpenAI's embeddings API)",
        description="OpenAI's `POST /v1/embeddings`, served by the model Engram stores and "
        "searches memories with (all-MiniLM-L6-v2 by default, 384 dimensions, on CPU in the "
        "web process): the vectors are the ones Engram stores for the same text. "
        "`usage` counts cl100k tokens, as limits do; no credits are charged unless an "
        "operator prices the model. Each request is in GET /v1/usage under the model's name.",
        tags=["chat"],
        parameters=[
            OpenApiParameter(
                HEADERS["user_id"],
                ID_SCHEMA,
                OpenApiParameter.HEADER,
                description="The end user whose limits the request counts against (else the "
                "body's `user`); with an end user's token, that user only.",
            )
        ],
        request={"application/json": ref("EmbeddingRequest")},
        responses={200: OpenApiResponse(ref("EmbeddingList"))},
        examples=[
            OpenApiExample(
                "Two texts",
                value={"model": "all-MiniLM-L6-v2", "input": ["I keep bees.", "Berlin"]},
                request_only=True,
            )
        ],
    )
    def post(self, request): ...
