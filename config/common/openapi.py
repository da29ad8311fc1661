"""What every app's OpenAPI annotations share: the error envelope, list pages, list parameters.

Documentation only: the APIs build their bodies as plain dicts; these serializers describe
them for drf-spectacular (and the schema test holds each response to them).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers

from config.common.ids import ID_SCHEMA as ID_SCHEMA  # an id a client names, for the APIs
from config.common.pagination import MAX_LIMIT


def const(value: str, **kwargs) -> serializers.CharField:
    """A field that is always `value` (an object's `object`), as JSON Schema's `const`."""
    field = type("ConstField", (serializers.CharField,), {})
    return extend_schema_field({"type": "string", "const": value})(field)(**kwargs)


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField(
        help_text="invalid_request_error, permission_error, not_found_error, rate_limit_error, "
        "upstream_error, timeout_error, server_error, ..."
    )
    param = serializers.CharField(
        allow_null=True, help_text="The body field, query parameter or header at fault."
    )
    code = serializers.CharField(allow_null=True, help_text="A stable machine-readable code.")


class ErrorSerializer(serializers.Serializer):
    """OpenAI's error envelope: every error Engram answers has this shape."""

    error = ErrorDetailSerializer()


class DeletedSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(help_text="`<kind>.deleted`")
    deleted = serializers.BooleanField()


def list_of(item: type[serializers.Serializer], name: str, *, cursor: bool = True) -> type:
    """The OpenAI-style list page of `item`: `{"object": "list", "data": [...], ...}`."""
    fields: dict[str, serializers.Field] = {
        "object": const("list"),
        "data": item(many=True),
    }
    if cursor:
        fields |= {
            "first_id": serializers.CharField(allow_null=True),
            "last_id": serializers.CharField(allow_null=True),
            "has_more": serializers.BooleanField(),
        }
    return type(f"{name}Serializer", (serializers.Serializer,), fields)


LIST_PARAMETERS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        description=f"Page size, 1-{MAX_LIMIT} (default 20).",
        required=False,
    ),
    OpenApiParameter(
        "order", str, enum=["asc", "desc"], description="By id (default desc).", required=False
    ),
    OpenApiParameter("after", ID_SCHEMA, description="The page after this id.", required=False),
    OpenApiParameter(
        "before",
        ID_SCHEMA,
        description="The page just before this id (in the list's order; has_more then says whether more precede it).",
        required=False,
    ),
]


def user_id_query(description: str = "Only this end user's.") -> OpenApiParameter:
    return OpenApiParameter("user_id", ID_SCHEMA, description=description, required=False)


# What each error status means, where an operation has it; a view may name its own.
ERRORS = {
    400: "Invalid input: the envelope's `param` names the field, parameter or header.",
    401: "The key is missing or not valid (`invalid_api_key`).",
    403: "The wrong kind of key for this path (a workspace key where the operator key is "
    "needed; the operator key or an end-user token where a workspace key is needed: "
    "`workspace_key_required`), or an "
    "end-user token naming another user (`user_mismatch`).",
    404: "No such object in the caller's workspace (another workspace's is not found either), "
    "or an id that is not a path segment.",
    413: "The body is over `ENGRAM_MAX_REQUEST_BYTES` (`request_too_large`).",
    415: "The body is not JSON (or multipart where a file is taken), or it is compressed: a "
    "`Content-Encoding` other than identity (`unsupported_media_type`; send it uncompressed).",
}


def error(status: int, description: str | None = None) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description or ERRORS[status])
