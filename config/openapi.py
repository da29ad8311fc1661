"""Engram's OpenAPI 3.1 document (drf-spectacular): hooks, the schema class, the key schemes.

- `endpoints` (preprocessing): leaves out the /api/v1 alias of every path (the description
  says it exists) and adds the plain Django views drf-spectacular cannot see (the chat door,
  /v1/context, /v1/embeddings, /v1/models, the health checks), each described by a documentation-only DRF view
  (`completions.openapi`, `HealthDoc` here) that is never routed.
- `EngramAutoSchema` adds the error responses each operation really has, in the envelope.
- `KeyScheme`: a workspace key (Bearer) for the API, the operator key for provisioning.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object, force_instance
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from config.common.closed import ClosedSerializer
from config.common.openapi import ERRORS, error

ALIAS_PREFIX = "/api/v1/"

DESCRIPTION = """\
A memory-augmented, OpenAI-compatible chat-completions service.

**Keys.** Every path except the health checks, this schema and `/docs` takes
`Authorization: Bearer <key>`: a workspace key (`sk-...`, scheme `WorkspaceKey`) for the API, the
operator key (`ENGRAM_ADMIN_KEY`, scheme `OperatorKey`) for provisioning workspaces and keys, or
an end user's JWT (scheme `EndUserToken`) from an issuer the workspace trusts (`/v1/auth/issuers`)
for chat completions, `/v1/context`, `/v1/models`, searching the workspace's collections it
names and that user's own memories, conversations and data. A missing or unknown key is 401 on every path (a JWT's 401 names the check it failed);
the wrong kind of key is 403 (`workspace_key_required` where a workspace key is needed).

**Alias.** Every `/v1/...` path is also served at `/api/v1/...`, identically; only the
`/v1` form is listed here.

**Errors** use OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`; `param` names
the body field, query parameter or header at fault.

**Lists** are pages: `limit` (1-100), `order` (`asc`|`desc`, by id), `after` / `before` (an id),
answered as `{"object": "list", "data", "first_id", "last_id", "has_more"}`.

**Unknown fields.** A REST body holds only its documented fields (`additionalProperties:
false`): another is a 400 `unknown_parameter` naming it. The chat doors pass unknown fields to
the upstream.

**Requests.** Every response carries `x-request-id` (the client's, when it sent a sane one).

The schema is at `/v1/schema` (YAML; `?format=json` for JSON), Swagger UI at `/docs`.
"""


class EngramAutoSchema(AutoSchema):
    """AutoSchema plus the error responses an operation has, each in the envelope.

    By default: 401 and 403 with a key, 404 with a path parameter, 400 with a body or a query
    parameter, 413 and 415 with a body. A view's `openapi_errors` (status -> description)
    replaces that default; an `extend_schema` response of the same status wins over both.
    """

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status, description in self._errors().items():
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    error(status, description), str(status), direction=direction
                )
        return responses

    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        """A closed body (config.common.closed) says so: `additionalProperties: false`."""
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        closed = isinstance(force_instance(serializer), ClosedSerializer)
        if direction == "request" and closed and schema.get("type") == "object":
            schema["additionalProperties"] = False
        return schema

    def get_operation_id(self) -> str:
        """`<path>_list` for a page of objects (drf-spectacular would say `_retrieve`)."""
        operation_id = super().get_operation_id()
        answer = self.get_response_serializers()
        if self.method == "GET" and getattr(answer, "__name__", "").endswith("ListSerializer"):
            return operation_id.removesuffix("_retrieve") + "_list"
        return operation_id

    def _errors(self) -> dict[int, str]:
        named = getattr(self.view, "openapi_errors", None)
        if named is not None:
            return {status: text or ERRORS[status] for status, text in named.items()}
        statuses: list[int] = []
        if self.get_auth():
            statuses += [401, 403]
        if "{" in self.path:
            statuses.append(404)
        body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer()
        query = any(
            isinstance(p, OpenApiParameter) and p.location == OpenApiParameter.QUERY
            for p in self.get_override_parameters()
        )
        if body or query:
            statuses.append(400)
        if body:
            statuses += [413, 415]
        return {status: ERRORS[status] for status in sorted(statuses)}


class KeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.WorkspaceKeyAuthentication"
    name = ["WorkspaceKey", "OperatorKey", "EndUserToken"]

    def get_security_definition(self, auto_schema):
        workspace = build_bearer_security_scheme_object("Authorization", "Bearer", "sk-...")
        workspace["description"] = "A workspace API key (`sk-...`), shown once at creation."
        operator = build_bearer_security_scheme_object("Authorization", "Bearer")
        operator["description"] = "The operator key, `ENGRAM_ADMIN_KEY`: provisioning only."
        end_user = build_bearer_security_scheme_object("Authorization", "Bearer", "JWT")
        end_user["description"] = (
            "An end user's JWT from an issuer the workspace trusts (`/v1/auth/issuers`): "
            "the user id comes from the token, and it reaches only that user's data."
        )
        return [workspace, operator, end_user]

    def get_security_requirement(self, auto_schema):
        from accounts.authentication import EndUserAllowed, IsOperator

        permissions = auto_schema.view.get_permissions()
        if any(isinstance(p, IsOperator) for p in permissions):
            return {"OperatorKey": []}
        if any(isinstance(p, EndUserAllowed) for p in permissions):
            return [{"WorkspaceKey": []}, {"EndUserToken": []}]
        return {"WorkspaceKey": []}


# --- the plain views ----------------------------------------------------------------------------


# Built with type(): a Serializer's own `errors` property would shadow the `errors` field.
HealthSerializer = type(
    "HealthSerializer",
    (serializers.Serializer,),
    {
        "status": serializers.CharField(help_text="`ok` or `unavailable`."),
        "checks": serializers.DictField(
            child=serializers.CharField(),
            required=False,
            help_text="Each check's state: `ok`, `unavailable`, `timeout` or `loading`.",
        ),
        "down": serializers.ListField(child=serializers.CharField(), required=False),
        "errors": serializers.DictField(
            child=serializers.CharField(),
            required=False,
            help_text="The state of each check that is down (the error itself is logged).",
        ),
    },
)


class _PublicDoc(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    openapi_errors: dict = {}


class HealthzDoc(_PublicDoc):
    @extend_schema(summary="Liveness", tags=["health"], responses={200: HealthSerializer}, auth=[])
    def get(self, request): ...


class ReadyzDoc(_PublicDoc):
    @extend_schema(
        summary="Readiness: the database, Redis and a Celery worker answer",
        tags=["health"],
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description="`down` names what is down."),
        },
        auth=[],
    )
    def get(self, request): ...


class MetricsDoc(APIView):
    def get_permissions(self):
        from accounts.authentication import IsOperator

        return [IsOperator()]

    openapi_errors = {401: "", 403: "A workspace key: /metrics needs the operator key."}

    @extend_schema(
        summary="Prometheus metrics (text exposition format)",
        description="Requests, errors, latency histograms (total, upstream, Engram's own), "
        "tokens, credits, limits hit, the Celery queues' depth and the extraction lag. "
        "Counters are per web process.",
        tags=["operators"],
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    def get(self, request): ...


def _documented() -> dict:
    """Plain Django view -> the documentation-only DRF view that describes it."""
    from completions import apis
    from completions import openapi as chat
    from completions.tools import apis as tools
    from completions.tools import openapi as tools_docs
    from completions.usage_api import metrics_view
    from config.common import health

    return {
        metrics_view: MetricsDoc,
        health.healthz: HealthzDoc,
        health.readyz: ReadyzDoc,
        apis.chat_completions: chat.ChatCompletionsDoc,
        apis.context_preview: chat.ContextDoc,
        apis.embeddings_create: chat.EmbeddingsDoc,
        apis.models_list: chat.ModelListDoc,
        apis.models_retrieve: chat.ModelDoc,
        tools.chat_resume: tools_docs.ChatResumeDoc,
    }


def _plain_views(patterns, prefix: str = ""):
    """(path regex, callback) of every route, as drf-spectacular's enumerator walks them."""
    for pattern in patterns:
        regex = prefix + str(pattern.pattern)
        if isinstance(pattern, URLPattern):
            yield regex, pattern.callback
        elif isinstance(pattern, URLResolver):
            yield from _plain_views(pattern.url_patterns, regex)


def endpoints(endpoints):
    """Preprocessing hook: no alias paths; the plain views, through their documentation."""
    from drf_spectacular.generators import EndpointEnumerator

    enumerator = EndpointEnumerator()
    documented = _documented()
    kept = [e for e in endpoints if not e[0].startswith(ALIAS_PREFIX)]
    for regex, callback in _plain_views(get_resolver().url_patterns):
        doc = documented.get(callback)
        path = enumerator.get_path_from_regex(regex)
        if doc is None or path.startswith(ALIAS_PREFIX):
            continue
        view = doc.as_view()
        kept += [(path, regex, method, view) for method in enumerator.get_allowed_methods(view)]
    return kept


def finish(result, generator, request, public):
    """Postprocessing hook: the description, and the chat shapes written as raw JSON Schema."""
    from completions.openapi import SCHEMAS

    result["info"]["description"] = DESCRIPTION
    result.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    return result
