"""The one parser of a chat request: body and Engram's headers -> a TurnContext.

Every door calls `turn_context`: the lean ASGI door and the Django view (both through
`gateway.chat_completions`) and `POST /v1/context`. Every rule about Engram's headers and own
body fields lives here and nowhere else; the OpenAI body itself is checked by
completions.validation (`parse_body` here is its two steps; the gateway calls them one by one,
to name the model in the usage record of a body it refuses):

- x-user-id (else the body's `user_id`, else its `user`), x-conversation-id, x-session-id (else
  the body's `session_id`): ids, 1-200 characters of letters, digits and . _ : @ + - / =
  (`config.common.ids.identifier`, the rule the REST routes' path and query ids share)
- x-workspace-id: must name the key's workspace (403 otherwise)
- x-user-id and a body `user_id` that name two users: a 400 naming `user_id` (which one was
  meant is not ours to guess); OpenAI's own `user` may differ (a hashed id for its abuse
  monitoring), read only when neither is given and passed on to the upstream unchanged
- with an end-user token (`end_user`), the user is the token's: an x-user-id or body
  `user_id` or `user` that names another is a 403 naming it
- x-collection-ids: a JSON array of at most MAX_COLLECTIONS (20) distinct collection ids (a
  repeated id counts once; the header sent twice is a 400 that says so), each an id as
  above
- `session_id`, `user_id`: Engram's own body fields, removed before the upstream call (the
  memory API's bodies name the user `user_id`; read here too, a mem0 client's turn was
  silently a stranger's, with no memory)
- x-stainless-retry-count (the OpenAI SDKs' own, above 0 on their retries): read, never
  refused (`retried`)

`api_error` is how every chat door answers an error: the domain names a field
(`conversation_id`), the client sent a header (`x-conversation-id`); HEADERS is that map.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ObjectDoesNotExist

from accounts.authentication import WORKSPACE_HEADER, check_claimed_workspace
from accounts.models import Workspace
from completions import validation
from config.common import errors, jsonbody
from config.common.errors import ApiError
from config.common.ids import ID_RULE, as_user_id, identifier, is_id, user_identifier
from memory.knowledge.search import MAX_COLLECTIONS, TOO_MANY_COLLECTIONS
from memory.turn.contract import TurnContext

# Engram's own body fields: removed before the upstream
ENGRAM_BODY_FIELDS = ("session_id", "user_id")
# The header that carries each domain field of a turn (the only place the two names meet).
HEADERS = {
    "user_id": "x-user-id",
    "conversation_id": "x-conversation-id",
    "session_id": "x-session-id",
    "collection_ids": "x-collection-ids",
    "workspace_id": WORKSPACE_HEADER,
}
RETRY_COUNT_HEADER = "x-stainless-retry-count"


def retried(headers: Mapping[str, str]) -> bool:
    """Does the client say it sent this request before? The OpenAI SDKs count their retries in
    x-stainless-retry-count ("0" on the first try). Not Engram's header: any other value is
    not a retry, never an error."""
    count = headers.get(RETRY_COUNT_HEADER)
    if not count:  # most requests: not an SDK's, or its first try has "0"
        return False
    count = count.strip()
    return count.isascii() and count.isdigit() and count.strip("0") != ""


def api_error(
    exc: ApiError | errors.DomainError | ObjectDoesNotExist,
    headers: Mapping[str, str] | None = None,
    *,
    end_user: str | None = None,
) -> ApiError:
    """errors.api_error for a chat door: a domain field is named by the header that carried it;
    with the request's `headers`, a session id that no header carried is the body's field.
    `end_user`: the token's user, to whom another user's conversation does not exist."""
    params = HEADERS
    if headers is not None and not headers.get(HEADERS["session_id"]):
        params = {**HEADERS, "session_id": "session_id"}
    return errors.api_error(exc, params=params, end_user=end_user is not None)


def parse_body(raw: bytes, *, model_required: bool = True) -> dict:
    """The JSON body as a dict, validated in OpenAI's words (400 naming `param` otherwise)."""
    body = validation.parse(raw)
    validation.validate(body, model_required=model_required)
    return body


def collection_ids(raw: str | None) -> list[str]:
    """x-collection-ids: a JSON array of collection ids, de-duplicated in order; the limit
    counts distinct ids (a repeated id is one collection, as the search bodies count them)."""
    param = HEADERS["collection_ids"]
    if not raw:
        return []
    try:
        value = jsonbody.loads(raw, param=param)
    except ApiError:  # not JSON, too deep, NUL: all one answer, below
        value = None
    if value is None and _repeated(raw):
        raise ApiError(
            400,
            f"{param} was given more than once (or as a comma-separated list): send one "
            'header holding one JSON array, e.g. ["col_a", "col_b"].',
            param=param,
            code="invalid_value",
        )
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ApiError(
            400,
            f'{param} must be a JSON array of collection ids, e.g. ["col_..."].',
            param=param,
            code="invalid_value",
        )
    value = list(dict.fromkeys(value))
    if len(value) > MAX_COLLECTIONS:
        raise ApiError(400, TOO_MANY_COLLECTIONS, param=param, code="invalid_value")
    for item in value:
        if not is_id(item):
            raise ApiError(
                400, f"Each collection id must be {ID_RULE}.", param=param, code="invalid_value"
            )
    return value


def _repeated(raw: str) -> bool:
    """Is this header two sent under one name? Both doors read a repeated header as its values
    joined by commas (Django's META; config.common.middleware.request_headers): `["col_a"],["col_b"]`, a JSON
    array followed by a comma, which was answered "must be a JSON array" as if neither were."""
    import json  # only on a refusal

    try:
        first, end = json.JSONDecoder().raw_decode(raw.lstrip())
    except (ValueError, RecursionError):
        return False
    return isinstance(first, list) and raw.lstrip()[end:].lstrip().startswith(",")


def _token_user(end_user: str, headers: Mapping[str, str], body: dict) -> str:
    """An end-user token names its user; a header or body field may repeat it, not change it."""
    for param, value in (
        (HEADERS["user_id"], headers.get(HEADERS["user_id"])),
        ("user_id", body.get("user_id")),
        ("user", body.get("user")),
    ):
        if value not in (None, "") and (
            not isinstance(value, str) or as_user_id(value) != end_user
        ):
            raise ApiError(
                403,
                f"{param} names another user than this end-user token's.",
                type="permission_error",
                param=param,
                code="user_mismatch",
            )
    return end_user


def user_mismatch(*, named_by: str) -> ApiError:
    """A `user_id` naming another user than the caller named first (`named_by`: the parameter
    the caller sent, x-user-id or a route's query): which one was meant is not ours to guess."""
    return ApiError(
        400,
        f"user_id names another user than {named_by}: send the user once.",
        param="user_id",
        code="user_mismatch",
    )


def caller_user(*, headers: Mapping[str, str], body: dict, end_user: str | None) -> str | None:
    """The end user a request acts for: `x-user-id`, else the body's `user_id` (Engram's, as
    the memory API's bodies name it; a 400 when it names another user than the header), else
    its `user` (OpenAI's); an end-user token's own user, which those may repeat but not change
    (403 naming the field). `body` is the whole body, Engram's own fields still in it."""
    user_id = user_identifier(headers.get(HEADERS["user_id"]), HEADERS["user_id"])
    body_user_id = user_identifier(body.get("user_id"), "user_id")
    if user_id is not None and body_user_id is not None and body_user_id != user_id:
        raise user_mismatch(named_by=HEADERS["user_id"])
    if user_id is None:
        user_id = body_user_id
    if user_id is None:
        user_id = user_identifier(body.get("user"), "user")
    if end_user is not None:
        return _token_user(end_user, headers, body)
    return user_id


def turn_context(
    *,
    workspace: Workspace,
    api_key_id: str | None,
    request_id: str,
    headers: Mapping[str, str],
    body: dict,
    end_user: str | None = None,
) -> TurnContext:
    """The turn a request describes; Engram's own body fields are taken out of `body`."""
    check_claimed_workspace(workspace=workspace, claimed=headers.get(HEADERS["workspace_id"]))
    user_id = caller_user(headers=headers, body=body, end_user=end_user)
    owned = {name: body.pop(name) for name in ENGRAM_BODY_FIELDS if name in body}
    session_id = identifier(headers.get(HEADERS["session_id"]), HEADERS["session_id"])
    if session_id is None:
        session_id = identifier(owned.get("session_id"), "session_id")
    return TurnContext(
        workspace=workspace,
        api_key_id=api_key_id,
        request_id=request_id,
        body=body,
        model=str(body.get("model") or ""),
        user_id=user_id,
        conversation_id=identifier(
            headers.get(HEADERS["conversation_id"]), HEADERS["conversation_id"]
        ),
        session_id=session_id,
        collection_ids=collection_ids(headers.get(HEADERS["collection_ids"])),
        retried=retried(headers),
    )
